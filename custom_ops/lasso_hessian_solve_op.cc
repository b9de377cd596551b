// SdisLassoHessianSolve: the linear solve of the (group) Lasso's implicit gradient, CPU kernel.
//
// For every task t (X [n,m], W [m,k] a solution of 1/(2n) ||Y - X W||_F^2 + lam sum_j ||W_j||,
// lam >= 0, right-hand side C [m,k]) the op returns U = H^{-1} C for the Jacobian H of the
// support-restricted stationarity map of sdis_tf.solvers.lasso.lasso_optimality:
//
//     (H V)_j = (G V_S)_j + c_j (V_j - (u_j . V_j) u_j)    for j in S = {j : W_j != 0},
//     (H V)_j = V_j                                         off S,
//
// with G = X^T X / n, c_j = lam / ||W_j|| and u_j = W_j / ||W_j|| (for k = 1 the curvature term
// vanishes). It computes exactly what sdis_tf.solvers.lasso.support_hessian_inverse and the
// backward's conjugate gradient compute in TensorFlow, in one kernel per task and in double:
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
// Off S, U_j = C_j. Cost per task: O(n s^2 + s^3) with s = |S|, no dependence on the other
// tasks; tasks run in parallel on TensorFlow's CPU thread pool.

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

using Matrix = Eigen::MatrixXd;
using Vector = Eigen::VectorXd;

// Relative jitter on A's diagonal (sdis_tf.solvers.lasso._JITTER for float64).
constexpr double kJitter = 1e-12;
// Refinement steps after the first application of the (jittered) inverse.
constexpr int kRefinements = 2;

// H^{-1} restricted to the support of one task.
class SupportHessianInverse {
 public:
  // xs: X_S [n, s]; w: W_S [s, k]; lam >= 0.
  SupportHessianInverse(const Matrix& xs, const Matrix& w, double lam)
      : curved_(w.cols() > 1 && lam > 0.0) {
    const int64_t s = xs.cols();
    gram_ = Matrix::Zero(s, s);
    gram_.selfadjointView<Eigen::Lower>().rankUpdate(xs.transpose(),
                                                      1.0 / static_cast<double>(xs.rows()));
    gram_ = gram_.selfadjointView<Eigen::Lower>();
    curvature_ = Vector::Zero(s);
    unit_ = Matrix::Zero(s, w.cols());
    if (curved_) {
      for (int64_t j = 0; j < s; ++j) {
        const double norm = w.row(j).norm();
        curvature_(j) = lam / norm;
        unit_.row(j) = w.row(j) / norm;
      }
    }
    Matrix a = gram_;
    a.diagonal() += curvature_;
    a.diagonal().array() += kJitter * a.diagonal().mean();
    a_inverse_ = a.llt().solve(Matrix::Identity(s, s));
    if (!curved_) return;
    Matrix sigma = -(unit_ * unit_.transpose()).cwiseProduct(a_inverse_);
    sigma.diagonal() += curvature_.cwiseInverse();
    sigma_lu_.compute(sigma);
  }

  // U_S with H U_S = R_S [s, k] (refined; see the header comment).
  Matrix Solve(const Matrix& r) const {
    Matrix u = Apply(r);
    Matrix residual = r - Product(u);
    double residual_norm = residual.norm();
    for (int step = 0; step < kRefinements && residual_norm > 0.0; ++step) {
      const Matrix candidate = u + Apply(residual);
      const Matrix candidate_residual = r - Product(candidate);
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
  Matrix Apply(const Matrix& r) const {
    Matrix z = a_inverse_ * r;
    if (!curved_) return z;
    return z + a_inverse_ * AlongUnits(sigma_lu_.solve(Radial(z)));
  }

  // H V on the support, exactly.
  Matrix Product(const Matrix& v) const {
    Matrix out = gram_ * v;
    if (curved_) {
      out += curvature_.asDiagonal() * (v - AlongUnits(Radial(v)));
    }
    return out;
  }

  // B^T V: the component u_j . V_j of each row of V [s, k] along its group's unit vector.
  Vector Radial(const Matrix& v) const { return unit_.cwiseProduct(v).rowwise().sum(); }
  // B y: rows y_j u_j.
  Matrix AlongUnits(const Vector& y) const { return unit_.array().colwise() * y.array(); }

  const bool curved_;  // k > 1 and lam > 0: the group norms' curvature enters H
  Matrix gram_, unit_, a_inverse_;
  Vector curvature_;
  Eigen::PartialPivLU<Matrix> sigma_lu_;
};

// One task: x [n,m], w and c and u [m,k], all row-major.
template <typename S>
void SolveTask(int64_t n, int64_t m, int64_t k, const S* x, const S* w, double lam, const S* c,
               S* u) {
  std::copy(c, c + m * k, u);
  std::vector<int64_t> support;  // ||W_j||^2 > 0 in the input precision, as lasso_optimality
  for (int64_t j = 0; j < m; ++j) {
    S norm2 = S(0);
    for (int64_t l = 0; l < k; ++l) norm2 += w[j * k + l] * w[j * k + l];
    if (norm2 > S(0)) support.push_back(j);
  }
  const int64_t s = static_cast<int64_t>(support.size());
  if (s == 0) return;
  Matrix xs(n, s), ws(s, k), cs(s, k);
  for (int64_t a = 0; a < s; ++a) {
    const int64_t j = support[a];
    for (int64_t i = 0; i < n; ++i) xs(i, a) = x[i * m + j];
    for (int64_t l = 0; l < k; ++l) {
      ws(a, l) = w[j * k + l];
      cs(a, l) = c[j * k + l];
    }
  }
  const Matrix us = SupportHessianInverse(xs, ws, lam).Solve(cs);
  for (int64_t a = 0; a < s; ++a) {
    for (int64_t l = 0; l < k; ++l) u[support[a] * k + l] = static_cast<S>(us(a, l));
  }
}

}  // namespace

REGISTER_OP("SdisLassoHessianSolve")
    .Input("x: T")
    .Input("w: T")
    .Input("lam: T")
    .Input("c: T")
    .Output("u: T")
    .Attr("T: {float, double}")
    .SetShapeFn([](InferenceContext* ctx) {
      ctx->set_output(0, ctx->input(3));
      return Status();
    })
    .Doc(R"doc(
U = H^{-1} C for the Jacobian H of the support-restricted (group) Lasso stationarity map at a
solution W (sdis_tf.solvers.lasso.lasso_optimality), per task: x [T,n,m], w [T,m,k],
lam scalar or [T] (>= 0), c [T,m,k] -> u [T,m,k] (u = c off the support).
)doc");

template <typename S>
class LassoHessianSolveOp : public OpKernel {
 public:
  explicit LassoHessianSolveOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& w = ctx->input(1);
    const Tensor& lam = ctx->input(2);
    const Tensor& c = ctx->input(3);
    OP_REQUIRES(ctx, x.dims() == 3,
                errors::InvalidArgument("X must have shape [T, n, m], got shape ",
                                        x.shape().DebugString()));
    const int64_t tasks = x.dim_size(0), n = x.dim_size(1), m = x.dim_size(2);
    OP_REQUIRES(ctx, w.dims() == 3 && w.dim_size(0) == tasks && w.dim_size(1) == m,
                errors::InvalidArgument("W must have shape [T, m, k] matching X [T, n, m] = ",
                                        x.shape().DebugString(), ", got shape ",
                                        w.shape().DebugString()));
    OP_REQUIRES(ctx, c.shape() == w.shape(),
                errors::InvalidArgument("C must have the shape of W, ", w.shape().DebugString(),
                                        ", got shape ", c.shape().DebugString()));
    OP_REQUIRES_OK(ctx, CheckPerTask(lam, tasks, "lam"));
    const int64_t k = w.dim_size(2);
    Tensor* u = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, c.shape(), &u));
    if (tasks == 0 || m == 0 || k == 0) {
      std::copy_n(c.flat<S>().data(), c.NumElements(), u->flat<S>().data());
      return;
    }
    const S* x_data = x.flat<S>().data();
    const S* w_data = w.flat<S>().data();
    const PerTask<S> lam_of(lam);
    const S* c_data = c.flat<S>().data();
    S* u_data = u->flat<S>().data();
    auto work = [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        SolveTask<S>(n, m, k, x_data + t * n * m, w_data + t * m * k,
                     lam_of[t], c_data + t * m * k,
                     u_data + t * m * k);
      }
    };
    // Per task: the support Gram matrix and two s x s factorisations, s <= m.
    const int64_t cost_per_task = std::max<int64_t>(1, n * m * m + 3 * m * m * m);
    ShardTasks(ctx, tasks, cost_per_task, work);
  }
};

REGISTER_KERNEL_BUILDER(Name("SdisLassoHessianSolve").Device(DEVICE_CPU).TypeConstraint<float>("T"),
                        LassoHessianSolveOp<float>);
REGISTER_KERNEL_BUILDER(
    Name("SdisLassoHessianSolve").Device(DEVICE_CPU).TypeConstraint<double>("T"),
    LassoHessianSolveOp<double>);

}  // namespace sdis_tf
