// SdisLassoImplicitVjp: the implicit gradient of the (group) Lasso, CPU kernel.
//
// For every task t (X [n,m], Y [n,k], W [m,k] a solution of 1/(2n) ||Y - X W||_F^2 +
// lam sum_j ||W_j||, lam >= 0, cotangent C = dL/dW [m,k]) the op computes what
// sdis_tf.implicit.root_vjp computes for the support-restricted stationarity map F of
// sdis_tf.solvers.lasso.lasso_optimality,
//
//     F(W)_j = X_j^T (X W - Y) / n + lam u_j   for j in S = {j : W_j != 0},   F(W)_j = W_j off S,
//
// (u_j = W_j / ||W_j||): the linear solve U = H^{-1} C with H = dF/dW, and its pull-back
// dL/d(X, Y, lam) = -(dF/d(X, Y, lam))^T U, in one pass per task and in double:
//
//     with V = U on S and 0 off S, R = X W - Y:
//     dL/dX = -(R V^T + X V W^T) / n,   dL/dY = X V / n,   dL/dlam = -sum_{j in S} u_j . U_j.
//
// The linear solve. H is symmetric:
//     (H V)_j = (G V_S)_j + c_j (V_j - (u_j . V_j) u_j)    for j in S,
//     (H V)_j = V_j                                         off S,
// with G = X^T X / n and c_j = lam / ||W_j|| (for k = 1 the curvature term vanishes). It is
// what sdis_tf.solvers.lasso.support_hessian_inverse and the backward's conjugate gradient
// compute in TensorFlow:
//
//   On S, H = A (x) I_k - B C B^T with A = G_SS + diag(c) (s x s, shared by the k columns) and
//   (B y)_j = y_j u_j. By Woodbury,
//       H^{-1} R = Z + A^{-1} B Sigma^{-1} B^T Z,   Z = A^{-1} R,
//       Sigma = C^{-1} - B^T A^{-1} B,   Sigma_ij = delta_ij / c_i - (u_i . u_j) (A^{-1})_ij,
//   i.e. a Cholesky factorisation of A, its inverse, and an LU factorisation of Sigma (s x s).
//   A gets a relative jitter (1e-12 of its mean diagonal) so that a singular G_SS (k = 1 with
//   a support larger than n, duplicated columns) stays factorisable; one or two steps of
//   iterative refinement with the exact product above then remove the jitter's effect, each
//   step kept only if it lowers the residual ||C_S - H U_S||.
//
// Off S, U_j = C_j. Cost per task: O(n s (s + k) + s^3) with s = |S|, no dependence on the other
// tasks; tasks run in parallel on TensorFlow's CPU thread pool. Tasks with s <= kSmall and
// k <= kSmall use matrices of bounded size: no heap allocation and Eigen's coefficient-based
// products instead of its blocked GEMM, whose set-up dominated at s ~ 6.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "Eigen/Cholesky"
#include "Eigen/Core"
#include "Eigen/LU"
#include "tf_kernel.h"

namespace sdis_tf {
namespace {

// Relative jitter on A's diagonal (sdis_tf.solvers.lasso._JITTER for float64).
constexpr double kJitter = 1e-12;
// Refinement steps after the first application of the (jittered) inverse.
constexpr int kRefinements = 2;
// Largest support size and k of the bounded-size instantiation (header comment).
constexpr int kSmall = 16;

// Double matrices with at most MaxSize rows and columns (Eigen::Dynamic: unbounded).
template <int MaxSize>
using Matrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor, MaxSize,
                             MaxSize>;
template <int MaxSize>
using Vector = Eigen::Matrix<double, Eigen::Dynamic, 1, Eigen::ColMajor, MaxSize, 1>;

// A * B: coefficient-based for the bounded-size instantiation (a few dozen entries, where
// Eigen's blocked GEMM spends its time in set-up), blocked GEMM otherwise.
template <int MaxSize, typename A, typename B>
auto MatMul(const A& a, const B& b) {
  if constexpr (MaxSize == Eigen::Dynamic) {
    return a * b;
  } else {
    return a.lazyProduct(b);
  }
}

// H^{-1} restricted to the support of one task; matrices of at most MaxSize rows and columns.
template <int MaxSize>
class SupportHessianInverse {
  using Mat = Matrix<MaxSize>;
  using Vec = Vector<MaxSize>;

 public:
  // gram: G_SS = X_S^T X_S / n [s, s]; w: W_S [s, k]; lam >= 0.
  SupportHessianInverse(const Mat& gram, const Mat& w, double lam)
      : curved_(w.cols() > 1 && lam > 0.0), gram_(gram) {
    const int64_t s = gram.cols();
    curvature_ = Vec::Zero(s);
    unit_ = Mat::Zero(s, w.cols());
    if (curved_) {
      for (int64_t j = 0; j < s; ++j) {
        const double norm = w.row(j).norm();
        curvature_(j) = lam / norm;
        unit_.row(j) = w.row(j) / norm;
      }
    }
    Mat a = gram_;
    a.diagonal() += curvature_;
    a.diagonal().array() += kJitter * a.diagonal().mean();
    a_inverse_ = a.llt().solve(Mat::Identity(s, s));
    if (!curved_) return;
    Mat sigma = -(unit_ * unit_.transpose()).cwiseProduct(a_inverse_);
    sigma.diagonal() += curvature_.cwiseInverse();
    sigma_lu_.compute(sigma);
  }

  // U_S with H U_S = R_S [s, k] (refined; see the header comment).
  Mat Solve(const Mat& r) const {
    Mat u = Apply(r);
    Mat residual = r - Product(u);
    double residual_norm = residual.norm();
    for (int step = 0; step < kRefinements && residual_norm > 0.0; ++step) {
      const Mat candidate = u + Apply(residual);
      const Mat candidate_residual = r - Product(candidate);
      const double candidate_norm = candidate_residual.norm();
      if (!(candidate_norm < residual_norm)) break;
      u = candidate;
      residual = candidate_residual;
      residual_norm = candidate_norm;
    }
    return u;
  }

 private:
  // The jittered inverse, by Woodbury.
  Mat Apply(const Mat& r) const {
    Mat z = MatMul<MaxSize>(a_inverse_, r);
    if (!curved_) return z;
    return z + MatMul<MaxSize>(a_inverse_, AlongUnits(sigma_lu_.solve(Radial(z))));
  }

  // H V on the support, exactly.
  Mat Product(const Mat& v) const {
    Mat out = MatMul<MaxSize>(gram_, v);
    if (curved_) {
      out += curvature_.asDiagonal() * (v - AlongUnits(Radial(v)));
    }
    return out;
  }

  // B^T V: the component u_j . V_j of each row of V [s, k] along its group's unit vector.
  Vec Radial(const Mat& v) const { return unit_.cwiseProduct(v).rowwise().sum(); }
  // B y: rows y_j u_j.
  Mat AlongUnits(const Vec& y) const { return unit_.array().colwise() * y.array(); }

  const bool curved_;  // k > 1 and lam > 0: the group norms' curvature enters H
  const Mat gram_;
  Mat unit_, a_inverse_;
  Vec curvature_;
  Eigen::PartialPivLU<Mat> sigma_lu_;
};

// The outputs of one task, row-major like the inputs: u [m,k], grad_x [n,m], grad_y [n,k], and
// grad_lam (one value).
template <typename S>
struct TaskGradients {
  S* u;
  S* grad_x;
  S* grad_y;
  S* grad_lam;
};

// U on the support and the pull-back of one task (header comment); the rows and columns off
// the support were set by the caller (U = C, dL/dX = 0).
template <int MaxSize, typename S>
void SolveOnSupport(int64_t n, int64_t m, int64_t k, const S* x, const S* y, const S* w,
                    double lam, const S* c, const std::vector<int64_t>& support,
                    const TaskGradients<S>& out) {
  using RowMajor = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const int64_t s = static_cast<int64_t>(support.size());
  const double inv_n = 1.0 / static_cast<double>(n);
  Eigen::MatrixXd xs(n, s);  // X_S
  Matrix<MaxSize> ws(s, k), cs(s, k);
  for (int64_t a = 0; a < s; ++a) {
    for (int64_t i = 0; i < n; ++i) xs(i, a) = x[i * m + support[a]];
    for (int64_t l = 0; l < k; ++l) {
      ws(a, l) = w[support[a] * k + l];
      cs(a, l) = c[support[a] * k + l];
    }
  }
  Matrix<MaxSize> gram(s, s);
  if constexpr (MaxSize == Eigen::Dynamic) {  // one rank-n update (BLAS-3)
    gram.setZero();
    gram.template selfadjointView<Eigen::Lower>().rankUpdate(xs.transpose(), inv_n);
    gram = gram.template selfadjointView<Eigen::Lower>();
  } else {
    gram.noalias() = xs.transpose().lazyProduct(xs) * inv_n;
  }
  const Matrix<MaxSize> us = SupportHessianInverse<MaxSize>(gram, ws, lam).Solve(cs);
  double grad_lam = 0.0;
  for (int64_t a = 0; a < s; ++a) {
    for (int64_t l = 0; l < k; ++l) out.u[support[a] * k + l] = static_cast<S>(us(a, l));
    grad_lam -= ws.row(a).dot(us.row(a)) / ws.row(a).norm();
  }
  *out.grad_lam = static_cast<S>(grad_lam);
  // R = X_S W_S - Y and X V = X_S U_S [n, k]; dL/dX on S = -(R U_S^T + X V W_S^T) / n [n, s].
  const Eigen::MatrixXd residual =
      MatMul<MaxSize>(xs, ws) - Eigen::Map<const RowMajor>(y, n, k).template cast<double>();
  const Eigen::MatrixXd xv = MatMul<MaxSize>(xs, us);
  Eigen::Map<RowMajor>(out.grad_y, n, k) = (xv * inv_n).template cast<S>();
  const Eigen::MatrixXd grad_xs =
      (MatMul<MaxSize>(residual, us.transpose()) + MatMul<MaxSize>(xv, ws.transpose())) *
      -inv_n;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t a = 0; a < s; ++a) out.grad_x[i * m + support[a]] = static_cast<S>(grad_xs(i, a));
  }
}

// One task: x [n,m], y [n,k], w and c [m,k], all row-major.
template <typename S>
void SolveTask(int64_t n, int64_t m, int64_t k, const S* x, const S* y, const S* w, double lam,
               const S* c, const TaskGradients<S>& out) {
  std::copy(c, c + m * k, out.u);
  std::fill(out.grad_x, out.grad_x + n * m, S(0));
  std::fill(out.grad_y, out.grad_y + n * k, S(0));
  *out.grad_lam = S(0);
  std::vector<int64_t> support;  // ||W_j||^2 > 0 in the input precision, as lasso_optimality
  for (int64_t j = 0; j < m; ++j) {
    S norm2 = S(0);
    for (int64_t l = 0; l < k; ++l) norm2 += w[j * k + l] * w[j * k + l];
    if (norm2 > S(0)) support.push_back(j);
  }
  const int64_t s = static_cast<int64_t>(support.size());
  if (s == 0) return;
  if (s <= kSmall && k <= kSmall) {
    SolveOnSupport<kSmall>(n, m, k, x, y, w, lam, c, support, out);
  } else {
    SolveOnSupport<Eigen::Dynamic>(n, m, k, x, y, w, lam, c, support, out);
  }
}

}  // namespace

REGISTER_OP("SdisLassoImplicitVjp")
    .Input("x: T")
    .Input("y: T")
    .Input("w: T")
    .Input("lam: T")
    .Input("c: T")
    .Output("u: T")
    .Output("grad_x: T")
    .Output("grad_y: T")
    .Output("grad_lam: T")
    .Attr("T: {float, double}")
    .SetShapeFn([](InferenceContext* ctx) {
      ctx->set_output(0, ctx->input(4));
      ctx->set_output(1, ctx->input(0));
      ctx->set_output(2, ctx->input(1));
      DimensionHandle tasks = ctx->UnknownDim();
      if (ctx->RankKnown(ctx->input(0)) && ctx->Rank(ctx->input(0)) == 3) {
        tasks = ctx->Dim(ctx->input(0), 0);
      }
      ctx->set_output(3, ctx->Vector(tasks));
      return Status();
    })
    .Doc(R"doc(
The implicit gradient of the (group) Lasso at a solution W, per task (see the source):
u = H^{-1} C for the Jacobian H of the support-restricted stationarity map
(sdis_tf.solvers.lasso.lasso_optimality), and the pull-back of the cotangent C through it,
grad_x = dL/dX, grad_y = dL/dY, grad_lam = dL/dlam. x [T,n,m], y [T,n,k], w [T,m,k],
lam scalar or [T] (>= 0), c [T,m,k] -> u [T,m,k] (u = c off the support), grad_x [T,n,m],
grad_y [T,n,k], grad_lam [T].
)doc");

template <typename S>
class LassoImplicitVjpOp : public OpKernel {
 public:
  explicit LassoImplicitVjpOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& y = ctx->input(1);
    const Tensor& w = ctx->input(2);
    const Tensor& lam = ctx->input(3);
    const Tensor& c = ctx->input(4);
    OP_REQUIRES(ctx, x.dims() == 3,
                errors::InvalidArgument("X must have shape [T, n, m], got shape ",
                                        x.shape().DebugString()));
    const int64_t tasks = x.dim_size(0), n = x.dim_size(1), m = x.dim_size(2);
    OP_REQUIRES(ctx, w.dims() == 3 && w.dim_size(0) == tasks && w.dim_size(1) == m,
                errors::InvalidArgument("W must have shape [T, m, k] matching X [T, n, m] = ",
                                        x.shape().DebugString(), ", got shape ",
                                        w.shape().DebugString()));
    const int64_t k = w.dim_size(2);
    OP_REQUIRES(ctx, y.dims() == 3 && y.dim_size(0) == tasks && y.dim_size(1) == n &&
                         y.dim_size(2) == k,
                errors::InvalidArgument("Y must have shape [T, n, k] = [", tasks, ", ", n, ", ",
                                        k, "] (X [T, n, m], W [T, m, k]), got shape ",
                                        y.shape().DebugString()));
    OP_REQUIRES(ctx, c.shape() == w.shape(),
                errors::InvalidArgument("C must have the shape of W, ", w.shape().DebugString(),
                                        ", got shape ", c.shape().DebugString()));
    OP_REQUIRES_OK(ctx, CheckPerTask(lam, tasks, "lam"));
    Tensor *u = nullptr, *grad_x = nullptr, *grad_y = nullptr, *grad_lam = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, c.shape(), &u));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, x.shape(), &grad_x));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, y.shape(), &grad_y));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(3, TensorShape({tasks}), &grad_lam));
    const S* x_data = x.flat<S>().data();
    const S* y_data = y.flat<S>().data();
    const S* w_data = w.flat<S>().data();
    const PerTask<S> lam_of(lam);
    const S* c_data = c.flat<S>().data();
    auto work = [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        const TaskGradients<S> out{u->flat<S>().data() + t * m * k,
                                   grad_x->flat<S>().data() + t * n * m,
                                   grad_y->flat<S>().data() + t * n * k,
                                   grad_lam->flat<S>().data() + t};
        SolveTask<S>(n, m, k, x_data + t * n * m, y_data + t * n * k, w_data + t * m * k,
                     lam_of[t], c_data + t * m * k, out);
      }
    };
    // Per task: the support Gram matrix, two s x s factorisations and the pull-back, s <= m.
    const int64_t cost_per_task = std::max<int64_t>(1, n * m * (m + k) + 3 * m * m * m);
    ShardTasks(ctx, tasks, cost_per_task, work);
  }
};

REGISTER_KERNEL_BUILDER(Name("SdisLassoImplicitVjp").Device(DEVICE_CPU).TypeConstraint<float>("T"),
                        LassoImplicitVjpOp<float>);
REGISTER_KERNEL_BUILDER(
    Name("SdisLassoImplicitVjp").Device(DEVICE_CPU).TypeConstraint<double>("T"),
    LassoImplicitVjpOp<double>);

}  // namespace sdis_tf
