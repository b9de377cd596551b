// SdisLassoCd: batched (group) Lasso by block coordinate descent, CPU kernel.
//
// For every task t (X_t [n,m], Y_t [n,k], lam_t >= 0) the op minimises
//
//     P(W) = 1/(2n) ||Y - X W||_F^2 + lam * sum_j ||W_j||_2        W [m,k], row j = W_j
//
// (the plain Lasso when k = 1) exactly as sdis_tf.solvers.lasso does, and returns W, the
// certificate (the duality gap of the full problem; for lam = 0 the stationarity residual
// ||X^T (Y - X W)||_F / n, since least squares has no useful gap: sdis_tf/solvers/
// lasso_problem.py), the number of coordinate-descent epochs and whether the certificate is
// within tol * ||Y||_F^2 / (2n) (lam = 0: tol * ||X^T Y||_F / n) with W finite. Tasks run in
// parallel on TensorFlow's CPU thread pool.
//
// Algorithm (per task), after skglm's MultiTaskBCD (working sets) and Gap Safe screening:
//   outer iteration:
//     R = Y - X W (recomputed in double), G = X^T R for all features (one pass over X),
//     dual point and duality gap (below); stop when gap <= tol * ||Y||^2 / (2n) (lam = 0:
//     when ||G||_F / n <= tol * ||X^T Y||_F / n, and no screening);
//     Gap Safe screening (below) removes features whose optimal W_j is provably 0;
//     score every remaining feature by its distance to the subdifferential
//       W_j != 0: || -G_j/n + lam W_j / ||W_j|| ||,   W_j = 0: max(0, ||G_j||/n - lam),
//     working set = the support plus the worst violators, size max(p0, 2 |support|);
//   inner loop: cyclic exact block minimisation over the working set,
//       W_j <- BST(W_j + X_j^T R / ||X_j||^2, n lam / ||X_j||^2),  BST(v,t) = max(0, 1-t/||v||) v
//     (L_j = ||X_j||^2 / n, step 1/L_j), until the largest violation met during an epoch is
//     <= 0.3 x the outer violation (skglm's rule) or the epoch budget is spent; every K+1
//     epochs an Anderson extrapolation of the last iterates is tried (skglm, K = 5) and kept
//     when it lowers the objective (it halves the epochs in bench/solvers_op.py's problems).
//   Plain Lasso (k = 1) only: a sign-fixed least-squares step on the support (below), after
//     the inner loop and inside it once the support and signs have held for kStableEpochs
//     epochs, finishes in one step what the epochs approach geometrically (at n = 50, m = 64:
//     18 epochs per task on average instead of 48).
//   Columns with ||X_j|| = 0 are skipped and get W_j = 0.
//
// Support solve (k = 1). On the orthant of the current signs sigma over the support S (W = 0
// off S) the objective is the quadratic q(w) = 1/(2n) ||y - X_S w||^2 + lam sigma^T w, whose
// minimiser solves (X_S^T X_S) w = X_S^T y - n lam sigma (Cholesky of X_S^T X_S gathered from
// the Gram of the cached columns; skipped when |S| > n or the Cholesky fails). If that point
// keeps the signs it is taken; otherwise the step goes from W towards it up to the first
// coordinate that reaches 0 (which leaves the support).
// Both stay in the closed orthant, where P = q and q decreases along the segment (convex,
// minimised at its end), so in exact arithmetic P never rises; the step is kept only if the
// objective computed from the new residual is lower. When the support and signs are those of
// the solution this is the solution, and the next gap check stops the task.
//
// Dual point and gap. With s = max_j ||X_j^T R|| and alpha = min(1, n lam / s) the dual point is
// theta = alpha R / (n lam), feasible (||X_j^T theta|| <= 1), and
//     D(theta) = 1/(2n) ||Y||^2 - (n lam^2 / 2) ||Y/(n lam) - theta||^2
//              = (||Y||^2 - ||Y - alpha R||^2) / (2n).
// Using Y = X W + R, the gap P(W) - D(theta) becomes a sum of non-negative terms,
//     gap = (1 - alpha)^2 ||R||^2 / (2n) + sum_j ( lam ||W_j|| - alpha <W_j, X_j^T R> / n ),
// (each bracket is >= 0 because alpha ||X_j^T R|| <= n lam), accumulated in double:
// no cancellation between P and D, and it stays defined for lam = 0 (alpha = 0 or 1).
//
// Gap Safe sphere for our 1/(2n) normalisation. D is (n lam^2)-strongly concave in theta and
// theta* maximises it over a convex set containing theta, so
//     (n lam^2 / 2) ||theta - theta*||^2 <= D(theta*) - D(theta) <= P(W) - D(theta) = gap,
// i.e. ||theta - theta*|| <= r = sqrt(2 gap / n) / lam. At the optimum W*_j != 0 only if
// ||X_j^T theta*|| = 1, and ||X_j^T theta*|| <= ||X_j^T theta|| + ||X_j|| r. Hence W*_j = 0 when
//     alpha ||X_j^T R|| / (n lam) + ||X_j|| sqrt(2 gap / n) / lam < 1
//  <=>  alpha ||X_j^T R|| + ||X_j|| sqrt(2 n gap) < n lam
// (multiplying by n lam; for lam = 0 nothing is screened). This is the usual radius
// sqrt(2 gap') / lam' of 1/2 ||Y - XW||^2 + lam' sum_j ||W_j|| with lam' = n lam, gap' = n gap.
// Screening only shrinks the working sets: G = X^T R is computed for every feature at each outer
// iteration (one pass over X), so the dual point, the stopping test and the reported gap are
// those of the full problem.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

#include "Eigen/Core"
#include "Eigen/Cholesky"
#include "tf_kernel.h"

namespace sdis_tf {
namespace {

struct Options {
  double tol;
  int64_t max_epochs;
  int64_t p0;
  bool screen;
  int64_t anderson;
  bool support_solve;
};

// Inner epochs stop once the violation is below this fraction of the outer one (skglm's 0.3;
// 0.01 measured no faster once Anderson extrapolation is on).
constexpr double kInnerRatio = 0.3;

// The support solve (k = 1) is also tried inside the inner loop once the support and signs
// have not changed for this many epochs in a row.
constexpr int64_t kStableEpochs = 2;

// The epochs' inner loops run on the widest vectors the CPU has (the GCC/Clang vector
// extension: 64 bytes with AVX-512, 32 with AVX, else 16), over cached columns and residual rows
// padded with zeros to a multiple of kLanes values, so that they need no remainder loop. A
// vector wider than the registers is not split cleanly: 64-byte vectors on an AVX2 CPU (AMD
// EPYC) made the group-Lasso solve 3.7x slower, passed through memory between functions.
#if defined(__AVX512F__)
constexpr int kPacketBytes = 64;
#elif defined(__AVX__)
constexpr int kPacketBytes = 32;
#else
constexpr int kPacketBytes = 16;
#endif

template <typename S, int Bytes>
struct SimdVector {
  typedef S type __attribute__((vector_size(Bytes)));
};

template <typename S>
struct Packet {
  typedef typename SimdVector<S, kPacketBytes>::type type;
  static constexpr int64_t kLanes = kPacketBytes / sizeof(S);
};

// Storage whose data starts on a 64-byte boundary (Eigen's allocator; TensorFlow builds with
// EIGEN_MAX_ALIGN_BYTES = 64), so that no packet of a padded row straddles two cache lines
// (split loads and stores made the group-Lasso solve ~1.15x slower).
template <typename S>
using AlignedVector = std::vector<S, Eigen::aligned_allocator<S>>;

template <typename S>
typename Packet<S>::type LoadPacket(const S* p) {
  typename Packet<S>::type v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

template <typename S>
void StorePacket(S* p, const typename Packet<S>::type& v) {
  std::memcpy(p, &v, sizeof(v));
}

template <typename S, int Bytes, std::size_t... I>
typename SimdVector<S, Bytes / 2>::type LowHalf(const typename SimdVector<S, Bytes>::type& v,
                                                std::index_sequence<I...>) {
  return __builtin_shufflevector(v, v, I...);
}

template <typename S, int Bytes, std::size_t... I>
typename SimdVector<S, Bytes / 2>::type HighHalf(const typename SimdVector<S, Bytes>::type& v,
                                                 std::index_sequence<I...>) {
  return __builtin_shufflevector(v, v, (I + sizeof...(I))...);
}

// The sum of a vector's lanes by repeated halving in registers (log2 lanes additions; going
// through memory stalls on store forwarding when the halves are reloaded).
template <typename S, int Bytes = kPacketBytes>
S SumLanes(const typename SimdVector<S, Bytes>::type& v) {
  if constexpr (Bytes == sizeof(S)) {
    return v[0];
  } else {
    constexpr std::make_index_sequence<Bytes / 2 / sizeof(S)> half;
    return SumLanes<S, Bytes / 2>(LowHalf<S, Bytes>(v, half) + HighHalf<S, Bytes>(v, half));
  }
}

// Calls f(std::integral_constant<int, Rows>(), l) for consecutive blocks [l, l + Rows) of at
// most kRowBlock of k rows: the kernels below keep one block's accumulators in registers.
// Six rows fit the 16 vector registers of AVX2 (with the block's factors and the column); on an
// AVX2 CPU blocks of 6 made the group-Lasso solve 1.15x faster than blocks of 4 at k = 5, 10
// and 16, and 8 were no faster.
constexpr int kRowBlock = 6;

template <int Rows, typename F>
void ForLastRowBlock(int64_t rows, int64_t l, F& f) {
  if constexpr (Rows > 0) {
    if (rows == Rows) {
      f(std::integral_constant<int, Rows>(), l);
    } else {
      ForLastRowBlock<Rows - 1>(rows, l, f);
    }
  }
}

template <typename F>
void ForRowBlocks(int64_t k, F f) {
  int64_t l = 0;
  for (; l + kRowBlock <= k; l += kRowBlock) f(std::integral_constant<int, kRowBlock>(), l);
  ForLastRowBlock<kRowBlock - 1>(k - l, l, f);
}

// out[l] = <x, rows_l> for Rows consecutive rows of length `padded` (a multiple of kLanes):
// one pass over x with an accumulator per row.
template <typename S, int Rows>
void DotRows(const S* x, const S* rows, int64_t padded, S* out) {
  typename Packet<S>::type acc[Rows] = {};
  for (int64_t i = 0; i < padded; i += Packet<S>::kLanes) {
    const auto xi = LoadPacket(x + i);
    for (int l = 0; l < Rows; ++l) acc[l] += xi * LoadPacket(rows + l * padded + i);
  }
  for (int l = 0; l < Rows; ++l) out[l] = SumLanes<S>(acc[l]);
}

// out[l] = <x, rows_l> for l < k.
template <typename S>
void DotAllRows(const S* x, const S* rows, int64_t padded, int64_t k, S* out) {
  ForRowBlocks(k, [&](auto block, int64_t l) {
    DotRows<S, block>(x, rows + l * padded, padded, out + l);
  });
}

// row -= a x over `padded` values (a multiple of kLanes).
template <typename S>
void SubtractScaled(S* row, const S* x, S a, int64_t padded) {
  for (int64_t i = 0; i < padded; i += Packet<S>::kLanes) {
    StorePacket(row + i, LoadPacket(row + i) - a * LoadPacket(x + i));
  }
}

// One feature's residual update fused with the next feature's dot products, in one pass over
// the rows: rows_l -= delta[l] x_old, then out[l] = <x_new, rows_l>, for Rows consecutive rows
// of length `padded` (a multiple of kLanes). The epochs' inner loops are bound by loads
// and stores, and this reads each row once instead of twice.
template <typename S, int Rows>
void UpdateDotRows(const S* x_old, const S* delta, const S* x_new, S* rows, int64_t padded,
                   S* out) {
  typename Packet<S>::type acc[Rows] = {};
  S d[Rows];
  for (int l = 0; l < Rows; ++l) d[l] = delta[l];
  for (int64_t i = 0; i < padded; i += Packet<S>::kLanes) {
    const auto xa = LoadPacket(x_old + i);
    const auto xb = LoadPacket(x_new + i);
    for (int l = 0; l < Rows; ++l) {
      const auto r = LoadPacket(rows + l * padded + i) - d[l] * xa;
      StorePacket(rows + l * padded + i, r);
      acc[l] += xb * r;
    }
  }
  for (int l = 0; l < Rows; ++l) out[l] = SumLanes<S>(acc[l]);
}

// G_l = X^T r_l for Rows rows r_l (length >= n, `stride` apart) and X [n,m] row-major, into
// rows of length m (`out`, m apart): 2 x kLanes columns of G per pass over X's rows, their
// accumulators in registers (the tail of fewer than 2 x kLanes columns one at a time).
template <typename S, int Rows>
void TransposedProductRows(const S* x, int64_t n, int64_t m, const S* rows, int64_t stride,
                           S* out) {
  constexpr int64_t kLanes = Packet<S>::kLanes;
  int64_t j = 0;
  for (; j + 2 * kLanes <= m; j += 2 * kLanes) {
    typename Packet<S>::type acc[Rows][2] = {};
    for (int64_t i = 0; i < n; ++i) {
      const auto x0 = LoadPacket(x + i * m + j);
      const auto x1 = LoadPacket(x + i * m + j + kLanes);
      for (int l = 0; l < Rows; ++l) {
        const S r = rows[l * stride + i];
        acc[l][0] += r * x0;
        acc[l][1] += r * x1;
      }
    }
    for (int l = 0; l < Rows; ++l) {
      StorePacket(out + l * m + j, acc[l][0]);
      StorePacket(out + l * m + j + kLanes, acc[l][1]);
    }
  }
  for (; j < m; ++j) {
    S acc[Rows] = {};
    for (int64_t i = 0; i < n; ++i) {
      for (int l = 0; l < Rows; ++l) acc[l] += rows[l * stride + i] * x[i * m + j];
    }
    for (int l = 0; l < Rows; ++l) out[l * m + j] = acc[l];
  }
}

// A packet of doubles, and kDoubleLanes values of a padded column of S loaded as one (the
// residual is recomputed in double; kLanes of S is a multiple of kDoubleLanes).
using DoublePacket = typename SimdVector<double, kPacketBytes>::type;
constexpr int64_t kDoubleLanes = kPacketBytes / sizeof(double);

template <typename S>
DoublePacket LoadAsDouble(const S* p) {
  typename SimdVector<S, kDoubleLanes * sizeof(S)>::type v;
  std::memcpy(&v, p, sizeof(v));
  return __builtin_convertvector(v, DoublePacket);
}

// rows_l = y_l - sum_a w[a * k + l] columns_a for Rows consecutive rows of length `padded` (in
// double) over the listed columns, a packet of each row at a time held in registers while
// the columns stream past.
template <typename S, int Rows>
void ResidualRows(const double* y, const std::vector<const S*>& columns, const S* w, int64_t k,
                  int64_t padded, double* rows) {
  for (int64_t i = 0; i < padded; i += kDoubleLanes) {
    DoublePacket acc[Rows];
    for (int l = 0; l < Rows; ++l) std::memcpy(&acc[l], y + l * padded + i, sizeof(DoublePacket));
    for (size_t a = 0; a < columns.size(); ++a) {
      const DoublePacket xa = LoadAsDouble(columns[a] + i);
      for (int l = 0; l < Rows; ++l) acc[l] -= static_cast<double>(w[a * k + l]) * xa;
    }
    for (int l = 0; l < Rows; ++l) {
      std::memcpy(rows + l * padded + i, &acc[l], sizeof(DoublePacket));
    }
  }
}

struct TaskStats {
  double gap;
  int32_t epochs;
  bool converged;
};

// Solves one task. x: X [n,m] row-major, y: Y [n,k] row-major, w0 and w: W [m,k] row-major.
// The columns of X that enter a working set are copied once into a contiguous cache; the
// gradient X^T R is computed from X as it is stored. Cached columns and the rows of Y and of
// the residual are padded with zeros to padded_ = n rounded up to a multiple of kLanes.
template <typename S>
class TaskSolver {
  using Vector = Eigen::Matrix<S, Eigen::Dynamic, 1>;
  using ColMatrix = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;

 public:
  TaskSolver(int64_t n, int64_t m, int64_t k, const Options& opt)
      : n_(n), padded_((n + Packet<S>::kLanes - 1) / Packet<S>::kLanes * Packet<S>::kLanes),
        m_(m), k_(k), opt_(opt), sqn_(m), thr_(m), inv_sqn_(m), active_(m), slot_(m),
        yd_(k * padded_, 0.0), rd_(k * padded_, 0.0), r_(k * padded_, S(0)), g_(k * m),
        gnorm_(m), score_(m), gbuf_(k), vbuf_(k), dbuf_(k) {
    order_.reserve(m);
    ws_.reserve(m);
  }

  TaskStats Solve(const S* x, const S* y, double lam, const S* w0, S* w) {
    const double nd = static_cast<double>(n_);
    const double nan = std::numeric_limits<double>::quiet_NaN();
    std::copy(w0, w0 + m_ * k_, w);
    if (!std::isfinite(lam) || !AllFinite(w0, m_ * k_) || !Setup(x, y, lam, w)) {
      std::fill(w, w + m_ * k_, std::numeric_limits<S>::quiet_NaN());
      return {nan, 0, false};
    }
    // The certificate (header comment): the duality gap, within tol P(0) = tol ||Y||^2 / (2n);
    // for lam = 0 the stationarity residual ||X^T R|| / n, within its value at W = 0.
    const bool least_squares = lam == 0.0;
    double tol_abs;
    if (least_squares) {
      tol_abs = opt_.tol * GradientNormAtZero() / nd;
    } else {
      tol_abs = opt_.tol * ynorm2_ / (2.0 * nd);
    }

    TaskStats stats{0.0, 0, false};
    while (true) {
      ComputeResidual(w);
      ComputeGradient();
      const double gap = Gap(w, lam);  // also sets alpha_, used by Screen
      const double certificate = least_squares ? GradientNorm() / nd : gap;
      stats.gap = certificate;
      if (certificate <= tol_abs) break;
      if (!std::isfinite(certificate) || stats.epochs >= opt_.max_epochs) break;
      if (opt_.screen && !least_squares) Screen(w, lam, gap);
      const double outer_viol = BuildWorkingSet(w, lam);
      const S tol_in = static_cast<S>(kInnerRatio * outer_viol);
      history_ = 0;
      const bool support_solve = opt_.support_solve && k_ == 1;
      bool solved = false;
      int64_t stable_epochs = 0;  // epochs in a row that kept the support and signs
      do {
        const S viol = Epoch(w, static_cast<S>(lam));
        ++stats.epochs;
        if (viol <= tol_in) break;
        stable_epochs = pattern_changed_ ? 0 : stable_epochs + 1;
        if (support_solve && stable_epochs == kStableEpochs && SupportSolve(w, lam)) {
          solved = true;
          break;
        }
        if (opt_.anderson > 0) Extrapolate(w, lam);
      } while (stats.epochs < opt_.max_epochs);
      if (support_solve && !solved) SupportSolve(w, lam);
    }
    // Converged only with a finite certificate within a finite threshold and a finite W; a
    // certificate that is not finite (overflow) leaves no usable W.
    if (!std::isfinite(stats.gap) || !std::isfinite(tol_abs)) {
      std::fill(w, w + m_ * k_, std::numeric_limits<S>::quiet_NaN());
      stats.gap = std::isfinite(stats.gap) ? stats.gap : nan;
    }
    stats.converged = stats.gap <= tol_abs && std::isfinite(tol_abs) && AllFinite(w, m_ * k_);
    return stats;
  }

 private:
  static bool AllFinite(const S* p, int64_t size) {
    for (int64_t i = 0; i < size; ++i) {
      if (!std::isfinite(p[i])) return false;
    }
    return true;
  }

  // Squared column norms, step sizes and thresholds; zero columns are taken out of play with
  // W_j = 0. Y is stored as k rows of length n. Returns false when X or Y holds a NaN or inf
  // (or, in double, a value whose square overflows): the norms, computed anyway, show it,
  // so the inputs need no pass of their own.
  bool Setup(const S* x, const S* y, double lam, S* w) {
    const double nd = static_cast<double>(n_);
    x_ = x;
    cache_.clear();
    std::fill(slot_.begin(), slot_.end(), int64_t{-1});
    std::fill(sqn_.begin(), sqn_.end(), 0.0);
    for (int64_t i = 0; i < n_; ++i) {
      const S* xi = x + i * m_;
      for (int64_t j = 0; j < m_; ++j) sqn_[j] += static_cast<double>(xi[j]) * xi[j];
    }
    for (int64_t j = 0; j < m_; ++j) {
      const double s = sqn_[j];
      active_[j] = s > 0.0 ? kActive : kZeroColumn;
      if (s > 0.0) {
        inv_sqn_[j] = static_cast<S>(1.0 / s);
        thr_[j] = static_cast<S>(nd * lam / s);
      } else {
        std::fill(w + j * k_, w + (j + 1) * k_, S(0));
      }
    }
    ynorm2_ = 0.0;
    for (int64_t i = 0; i < n_; ++i) {
      for (int64_t l = 0; l < k_; ++l) {
        yd_[l * padded_ + i] = y[i * k_ + l];
        ynorm2_ += yd_[l * padded_ + i] * yd_[l * padded_ + i];
      }
    }
    gram_columns_ = 0;
    return std::isfinite(ynorm2_) &&
           std::all_of(sqn_.begin(), sqn_.end(), [](double s) { return std::isfinite(s); });
  }

  // Copies column j of X into the cache (once). Invalidates pointers from Column().
  void CacheColumn(int64_t j) {
    if (slot_[j] >= 0) return;
    slot_[j] = static_cast<int64_t>(cache_.size()) / padded_;
    for (int64_t i = 0; i < n_; ++i) cache_.push_back(x_[i * m_ + j]);
    cache_.resize(cache_.size() + padded_ - n_, S(0));
  }

  const S* Column(int64_t j) const { return &cache_[slot_[j] * padded_]; }

  bool RowIsZero(const S* w, int64_t j) const {
    for (int64_t l = 0; l < k_; ++l) {
      if (w[j * k_ + l] != S(0)) return false;
    }
    return true;
  }

  // R = Y - X W in double (no drift from the incremental updates), copied to r_ for the epochs.
  void ComputeResidual(const S* w) {
    nonzero_.clear();
    for (int64_t j = 0; j < m_; ++j) {
      if (active_[j] == kActive && !RowIsZero(w, j)) {
        CacheColumn(j);
        nonzero_.push_back(j);
      }
    }
    nonzero_columns_.clear();  // only now: caching a column may move the cache
    nonzero_w_.clear();
    for (int64_t j : nonzero_) {
      nonzero_columns_.push_back(Column(j));
      nonzero_w_.insert(nonzero_w_.end(), w + j * k_, w + (j + 1) * k_);
    }
    ForRowBlocks(k_, [&](auto block, int64_t l) {
      ResidualRows<S, block>(&yd_[l * padded_], nonzero_columns_, nonzero_w_.data() + l, k_,
                             padded_, &rd_[l * padded_]);
    });
    for (size_t i = 0; i < rd_.size(); ++i) r_[i] = static_cast<S>(rd_[i]);
  }

  // G = X^T R for every feature, k rows of length m (from X [n,m] as it is stored), and the
  // norms ||G_j||.
  void ComputeGradient() {
    ForRowBlocks(k_, [&](auto block, int64_t l) {
      TransposedProductRows<S, block>(x_, n_, m_, &r_[l * padded_], padded_, &g_[l * m_]);
    });
    for (int64_t j = 0; j < m_; ++j) {
      double norm2 = 0.0;
      for (int64_t l = 0; l < k_; ++l) {
        norm2 += static_cast<double>(g_[l * m_ + j]) * g_[l * m_ + j];
      }
      gnorm_[j] = std::sqrt(norm2);
    }
  }

  // ||X^T R||_F from the norms of ComputeGradient (the stationarity residual times n).
  double GradientNorm() const {
    double norm2 = 0.0;
    for (int64_t j = 0; j < m_; ++j) norm2 += gnorm_[j] * gnorm_[j];
    return std::sqrt(norm2);
  }

  // ||X^T Y||_F: GradientNorm at W = 0 (the residual is Y there; ComputeResidual resets it).
  double GradientNormAtZero() {
    for (size_t i = 0; i < yd_.size(); ++i) r_[i] = static_cast<S>(yd_[i]);
    ComputeGradient();
    return GradientNorm();
  }

  // Duality gap of the full problem (see the header comment); sets alpha_. NaN if any
  // ||X_j^T R|| is (std::max would drop it).
  double Gap(const S* w, double lam) {
    const double nd = static_cast<double>(n_);
    double s = 0.0;
    for (int64_t j = 0; j < m_; ++j) {
      if (active_[j] != kZeroColumn && !(gnorm_[j] <= s)) s = gnorm_[j];
    }
    alpha_ = s <= nd * lam ? 1.0 : nd * lam / s;
    double rnorm2 = 0.0;
    for (double v : rd_) rnorm2 += v * v;
    double gap = (1.0 - alpha_) * (1.0 - alpha_) * rnorm2 / (2.0 * nd);
    for (int64_t j = 0; j < m_; ++j) {
      if (active_[j] != kActive) continue;
      double wn2 = 0.0, wg = 0.0;
      for (int64_t l = 0; l < k_; ++l) {
        const double wl = w[j * k_ + l];
        wn2 += wl * wl;
        wg += wl * g_[l * m_ + j];
      }
      if (wn2 > 0.0) gap += lam * std::sqrt(wn2) - alpha_ * wg / nd;
    }
    return gap;
  }

  // Gap Safe screening (derivation in the header comment). A screened feature leaves the
  // problem for good; if its W_j was non-zero it is set to 0 and the residual updated.
  void Screen(S* w, double lam, double gap) {
    const double nd = static_cast<double>(n_);
    const double radius = std::sqrt(2.0 * nd * std::max(gap, 0.0));
    for (int64_t j = 0; j < m_; ++j) {
      if (active_[j] != kActive) continue;
      if (alpha_ * gnorm_[j] + std::sqrt(sqn_[j]) * radius >= nd * lam) continue;
      active_[j] = kScreened;
      if (RowIsZero(w, j)) continue;
      const S* xj = Column(j);
      for (int64_t l = 0; l < k_; ++l) {
        const S wl = w[j * k_ + l];
        if (wl == S(0)) continue;
        SubtractScaled(&r_[l * padded_], xj, -wl, padded_);
        w[j * k_ + l] = S(0);
      }
    }
  }

  // Scores the active features by their distance to the subdifferential and fills ws_ with the
  // support and the worst violators (sorted by index). Returns the largest violation.
  double BuildWorkingSet(const S* w, double lam) {
    const double nd = static_cast<double>(n_);
    const double inf = std::numeric_limits<double>::infinity();
    double max_viol = 0.0;
    int64_t support = 0;
    order_.clear();
    for (int64_t j = 0; j < m_; ++j) {
      if (active_[j] != kActive) continue;
      order_.push_back(j);
      double wn2 = 0.0;
      for (int64_t l = 0; l < k_; ++l) wn2 += static_cast<double>(w[j * k_ + l]) * w[j * k_ + l];
      double viol;
      if (wn2 > 0.0) {
        const double scale = lam / std::sqrt(wn2);
        double d2 = 0.0;
        for (int64_t l = 0; l < k_; ++l) {
          const double d = -g_[l * m_ + j] / nd + scale * w[j * k_ + l];
          d2 += d * d;
        }
        viol = std::sqrt(d2);
        score_[j] = inf;
        ++support;
      } else {
        viol = std::max(0.0, gnorm_[j] / nd - lam);
        score_[j] = std::isnan(viol) ? inf : viol;
      }
      if (viol > max_viol) max_viol = viol;
    }
    const int64_t size = std::min<int64_t>(order_.size(), std::max(opt_.p0, 2 * support));
    if (size < static_cast<int64_t>(order_.size())) {
      std::nth_element(order_.begin(), order_.begin() + size, order_.end(),
                       [this](int64_t a, int64_t b) { return score_[a] > score_[b]; });
    }
    ws_.assign(order_.begin(), order_.begin() + size);
    std::sort(ws_.begin(), ws_.end());
    for (int64_t j : ws_) CacheColumn(j);
    return max_viol;
  }

  // One cyclic pass of exact block minimisation over the working set. Returns the largest
  // distance to the subdifferential met (each feature measured just before its update).
  S Epoch(S* w, S lam) {
    const S inv_n = S(1) / static_cast<S>(n_);
    S max_viol = S(0);
    pattern_changed_ = false;
    S* g = gbuf_.data();
    S* v = vbuf_.data();
    S* delta = dbuf_.data();
    const S* moved = nullptr;  // the previous feature's column if its W_j changed (by delta)
    for (int64_t j : ws_) {
      if (active_[j] != kActive) continue;
      const S* xj = Column(j);
      S* wj = &w[j * k_];
      S gn2 = S(0), wn2 = S(0), vn2 = S(0);
      if (moved == nullptr) {
        DotAllRows(xj, r_.data(), padded_, k_, g);
      } else {  // the residual update of the previous feature, then the dot products
        ForRowBlocks(k_, [&](auto block, int64_t l) {
          UpdateDotRows<S, block>(moved, delta + l, xj, &r_[l * padded_], padded_, g + l);
        });
      }
      for (int64_t l = 0; l < k_; ++l) {
        gn2 += g[l] * g[l];
        wn2 += wj[l] * wj[l];
        v[l] = wj[l] + g[l] * inv_sqn_[j];
        vn2 += v[l] * v[l];
      }
      S viol;
      if (wn2 > S(0)) {
        const S scale = lam / std::sqrt(wn2);
        S d2 = S(0);
        for (int64_t l = 0; l < k_; ++l) {
          const S d = -g[l] * inv_n + scale * wj[l];
          d2 += d * d;
        }
        viol = std::sqrt(d2);
      } else {
        viol = std::max(S(0), std::sqrt(gn2) * inv_n - lam);
      }
      if (viol > max_viol) max_viol = viol;
      const S vn = std::sqrt(vn2);
      const S shrink = vn > thr_[j] ? S(1) - thr_[j] / vn : S(0);
      if ((wn2 > S(0)) != (shrink > S(0)) || (k_ == 1 && wj[0] * v[0] < S(0))) {
        pattern_changed_ = true;
      }
      moved = nullptr;
      for (int64_t l = 0; l < k_; ++l) {
        delta[l] = shrink * v[l] - wj[l];
        if (delta[l] != S(0)) moved = xj;
        wj[l] += delta[l];
      }
    }
    if (moved != nullptr) {
      for (int64_t l = 0; l < k_; ++l) SubtractScaled(&r_[l * padded_], moved, delta[l], padded_);
    }
    return max_viol;
  }

  // The sign-fixed least-squares step on the support (k = 1; header comment). Returns true when
  // the full step was taken (the minimiser kept the signs); W and the residual are updated
  // whenever the step lowers the objective.
  bool SupportSolve(S* w, double lam) {
    const double nd = static_cast<double>(n_);
    support_.clear();
    for (int64_t j = 0; j < m_; ++j) {
      if (active_[j] == kActive && w[j] != S(0)) support_.push_back(j);
    }
    const int64_t s = static_cast<int64_t>(support_.size());
    if (s == 0 || s > n_) return false;
    UpdateCacheGram();
    gram_.resize(s, s);
    const Eigen::Map<const Eigen::VectorXd> y(yd_.data(), n_);
    Eigen::VectorXd w_now(s), rhs(s);
    for (int64_t a = 0; a < s; ++a) {
      for (int64_t b = 0; b <= a; ++b) {
        gram_(a, b) = cache_gram_(slot_[support_[a]], slot_[support_[b]]);
      }
      w_now(a) = w[support_[a]];
      const Eigen::Map<const Vector> column(Column(support_[a]), n_);
      rhs(a) = column.template cast<double>().dot(y) - nd * lam * (w_now(a) > 0.0 ? 1.0 : -1.0);
    }
    const Eigen::LLT<Eigen::MatrixXd, Eigen::Lower> llt(gram_);
    if (llt.info() != Eigen::Success) return false;
    Eigen::VectorXd w_new = llt.solve(rhs);
    if (!w_new.allFinite()) return false;
    double step = 1.0;  // towards w_new, up to the first sign change
    for (int64_t a = 0; a < s; ++a) {
      if (w_new(a) * w_now(a) <= 0.0) step = std::min(step, w_now(a) / (w_now(a) - w_new(a)));
    }
    w_new = w_now + step * (w_new - w_now);
    Eigen::VectorXd r_new = y;
    for (int64_t a = 0; a < s; ++a) {
      // the coordinates the step brought to 0 (up to rounding) leave the support exactly
      if (w_new(a) * w_now(a) <= 0.0 || std::abs(w_new(a)) <= 1e-12 * std::abs(w_now(a))) {
        w_new(a) = 0.0;
      }
      const Eigen::Map<const Vector> column(Column(support_[a]), n_);
      r_new -= w_new(a) * column.template cast<double>();
    }
    const Eigen::Map<const Vector> r_now(r_.data(), n_);
    const double p_now = 0.5 * static_cast<double>(r_now.squaredNorm()) / nd +
                         lam * w_now.template lpNorm<1>();
    const double p_new = 0.5 * r_new.squaredNorm() / nd + lam * w_new.template lpNorm<1>();
    if (!(p_new < p_now)) return false;
    for (int64_t a = 0; a < s; ++a) w[support_[a]] = static_cast<S>(w_new(a));
    Eigen::Map<Vector>(r_.data(), n_) = r_new.template cast<S>();
    history_ = 0;  // the Anderson history no longer describes the iterates
    return step == 1.0;
  }

  // Extends the Gram matrix of the cached columns, cache_gram_(a, b) = <X_a, X_b> by cache
  // slot, to the columns cached since the last call (one GEMM over the new ones).
  void UpdateCacheGram() {
    const int64_t cached = static_cast<int64_t>(cache_.size()) / padded_;
    const int64_t done = gram_columns_, added = cached - done;
    if (added == 0) return;
    if (cache_gram_.rows() < m_) cache_gram_.resize(m_, m_);
    const Eigen::Map<const ColMatrix> columns(cache_.data(), padded_, cached);  // zeros add 0
    cache_gram_.block(0, done, cached, added).noalias() =
        (columns.transpose() * columns.rightCols(added)).template cast<double>();
    cache_gram_.block(done, 0, added, done) = cache_gram_.block(0, done, done, added).transpose();
    gram_columns_ = cached;
  }

  // Anderson extrapolation on the working set (skglm's scheme, K = opt_.anderson): the iterates
  // after K+1 consecutive epochs, W^(0..K), give U = [W^(1)-W^(0), ..., W^(K)-W^(K-1)] and
  //     c = (U^T U)^{-1} 1 / (1^T (U^T U)^{-1} 1),   W_acc = sum_i c_i W^(i),
  // and, since sum_i c_i = 1, R_acc = Y - X W_acc = sum_i c_i R^(i) without touching X. W_acc
  // replaces W when it lowers the objective (only the working-set terms differ).
  void Extrapolate(S* w, double lam) {
    const int64_t K = opt_.anderson;
    const int64_t d = static_cast<int64_t>(ws_.size()) * k_;
    const int64_t q = padded_ * k_;
    if (history_ == 0) {
      hist_w_.resize((K + 1) * d);
      hist_r_.resize((K + 1) * q);
    }
    S* hw = &hist_w_[history_ * d];
    for (int64_t a = 0; a < static_cast<int64_t>(ws_.size()); ++a) {
      std::copy(w + ws_[a] * k_, w + (ws_[a] + 1) * k_, hw + a * k_);
    }
    std::copy(r_.begin(), r_.end(), hist_r_.begin() + history_ * q);
    if (++history_ <= K) return;
    history_ = 0;
    Eigen::Map<const ColMatrix> hist_w(hist_w_.data(), d, K + 1);
    Eigen::Map<const ColMatrix> hist_r(hist_r_.data(), q, K + 1);
    const Eigen::MatrixXd U = (hist_w.rightCols(K) - hist_w.leftCols(K)).template cast<double>();
    const Eigen::LDLT<Eigen::MatrixXd> ldlt(U.transpose() * U);
    if (ldlt.info() != Eigen::Success) return;
    Eigen::VectorXd c = ldlt.solve(Eigen::VectorXd::Ones(K));
    c /= c.sum();
    if (!c.allFinite()) return;
    const Vector c_s = c.cast<S>();
    const Vector w_acc = hist_w.rightCols(K) * c_s;
    const Vector r_acc = hist_r.rightCols(K) * c_s;
    const Eigen::Map<const Vector> r_now(r_.data(), q);
    double p_acc = 0.5 * static_cast<double>(r_acc.squaredNorm()) / n_;
    double p_now = 0.5 * static_cast<double>(r_now.squaredNorm()) / n_;
    for (int64_t a = 0; a < static_cast<int64_t>(ws_.size()); ++a) {
      p_acc += lam * static_cast<double>(w_acc.segment(a * k_, k_).norm());
      p_now += lam * static_cast<double>(Eigen::Map<const Vector>(w + ws_[a] * k_, k_).norm());
    }
    if (!(p_acc < p_now)) return;
    for (int64_t a = 0; a < static_cast<int64_t>(ws_.size()); ++a) {
      if (active_[ws_[a]] != kActive) continue;
      std::copy(w_acc.data() + a * k_, w_acc.data() + (a + 1) * k_, w + ws_[a] * k_);
    }
    Eigen::Map<Vector>(r_.data(), q) = r_acc;
  }

  static constexpr char kActive = 0;
  static constexpr char kScreened = 1;
  static constexpr char kZeroColumn = 2;

  const int64_t n_, padded_, m_, k_;
  const Options opt_;
  const S* x_ = nullptr;        // X [n,m] row-major, the task's input
  AlignedVector<S> cache_;      // cached columns of X, column j at slot_[j] * padded_ (zero-padded)
  std::vector<double> sqn_;     // ||X_j||^2
  double ynorm2_ = 0.0;         // ||Y||_F^2
  std::vector<S> thr_;          // n lam / ||X_j||^2
  std::vector<S> inv_sqn_;      // 1 / ||X_j||^2
  std::vector<char> active_;    // kActive, kScreened or kZeroColumn
  std::vector<int64_t> slot_;   // position of column j in cache_, or -1
  AlignedVector<double> yd_;    // Y, k rows (padded_ apart, zero-padded)
  AlignedVector<double> rd_;    // R = Y - X W, the same layout (outer iterations)
  AlignedVector<S> r_;          // the same, updated by the epochs (rows padded_ apart)
  std::vector<S> g_;            // X^T R, k rows of length m
  std::vector<double> gnorm_;   // ||X_j^T R||
  std::vector<double> score_;   // working-set scores
  std::vector<S> gbuf_, vbuf_, dbuf_;  // per-feature scratch [k]: X_j^T R, W_j + step, change
  std::vector<S> hist_w_, hist_r_;  // Anderson: last iterates on the working set, residuals
  // support solve (k = 1): the support, the Gram of the cached columns (by slot, the first
  // gram_columns_ of them filled) and the support's Gram X_S^T X_S
  std::vector<int64_t> support_;
  Eigen::MatrixXd cache_gram_, gram_;
  int64_t gram_columns_ = 0;
  int64_t history_ = 0;         // iterates stored so far
  bool pattern_changed_ = false;  // the last epoch changed the support or (k = 1) a sign
  std::vector<int64_t> order_, ws_;
  // ComputeResidual: the features with W_j != 0, their cached columns and their W_j rows
  std::vector<int64_t> nonzero_;
  std::vector<const S*> nonzero_columns_;
  std::vector<S> nonzero_w_;
  double alpha_ = 1.0;
};

Status SetShapes(InferenceContext* c) {
  ShapeHandle x = c->input(0);
  ShapeHandle y = c->input(1);
  DimensionHandle tasks = c->UnknownDim(), features = c->UnknownDim();
  if (c->RankKnown(x) && c->Rank(x) == 3) {
    tasks = c->Dim(x, 0);
    features = c->Dim(x, 2);
  }
  if (c->RankKnown(y) && c->Rank(y) == 2) {
    c->set_output(0, c->Matrix(tasks, features));
  } else if (c->RankKnown(y) && c->Rank(y) == 3) {
    c->set_output(0, c->MakeShape({tasks, features, c->Dim(y, 2)}));
  } else {
    c->set_output(0, c->UnknownShape());
  }
  c->set_output(1, c->Vector(tasks));
  c->set_output(2, c->Vector(tasks));
  c->set_output(3, c->Vector(tasks));
  return Status();
}

}  // namespace

REGISTER_OP("SdisLassoCd")
    .Input("x: T")
    .Input("y: T")
    .Input("lam: T")
    .Input("w0: T")
    .Input("tol: double")
    .Output("w: T")
    .Output("gap: T")
    .Output("epochs: int32")
    .Output("converged: bool")
    .Attr("T: {float, double}")
    .Attr("max_epochs: int = 1000")
    .Attr("p0: int = 10")
    .Attr("screen: bool = true")
    .Attr("anderson: int = 5")
    .Attr("support_solve: bool = true")
    .SetShapeFn(SetShapes)
    .Doc(R"doc(
Batched (group) Lasso: for each task t minimises
1/(2n) ||Y_t - X_t W||_F^2 + lam_t sum_j ||W_j||_2 by coordinate descent with working sets,
Gap Safe screening and Anderson extrapolation. x: [T,n,m]; y: [T,n] or [T,n,k];
lam: scalar or [T], >= 0; w0: warm start, the shape of w; tol: stop when
gap <= tol ||Y_t||^2 / (2n). p0: minimum working-set size; screen: Gap Safe screening on/off;
anderson: extrapolation depth K (0: off); support_solve: the sign-fixed least-squares step on
the support (plain Lasso, k = 1) on/off.
w: [T,m] or [T,m,k] (NaN for a task with a non-finite input or certificate); gap: the
certificate [T], the duality gap (lam > 0) or ||X_t^T (Y_t - X_t W)||_F / n (lam = 0); epochs:
coordinate-descent passes over the working sets [T]; converged: gap <= tol ||Y_t||^2 / (2n)
(lam = 0: <= tol ||X_t^T Y_t||_F / n), both finite, and W finite [T].
)doc");

template <typename S>
class LassoCdOp : public OpKernel {
 public:
  explicit LassoCdOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("max_epochs", &max_epochs_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("p0", &p0_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("screen", &screen_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("anderson", &anderson_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("support_solve", &support_solve_));
    OP_REQUIRES(ctx, max_epochs_ >= 0,
                errors::InvalidArgument("max_epochs must be >= 0, got ", max_epochs_));
    OP_REQUIRES(ctx, p0_ >= 1, errors::InvalidArgument("p0 must be >= 1, got ", p0_));
    OP_REQUIRES(ctx, anderson_ >= 0,
                errors::InvalidArgument("anderson must be >= 0, got ", anderson_));
    OP_REQUIRES(ctx, max_epochs_ <= std::numeric_limits<int32_t>::max(),
                errors::InvalidArgument("max_epochs must fit in int32, got ", max_epochs_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& y = ctx->input(1);
    const Tensor& lam = ctx->input(2);
    const Tensor& w0 = ctx->input(3);
    const Tensor& tol = ctx->input(4);
    OP_REQUIRES(ctx, x.dims() == 3,
                errors::InvalidArgument("X must have shape [T, n, m], got shape ",
                                        x.shape().DebugString()));
    OP_REQUIRES(ctx, y.dims() == 2 || y.dims() == 3,
                errors::InvalidArgument("Y must have shape [T, n] or [T, n, k], got shape ",
                                        y.shape().DebugString()));
    const int64_t tasks = x.dim_size(0), n = x.dim_size(1), m = x.dim_size(2);
    OP_REQUIRES(ctx, y.dim_size(0) == tasks && y.dim_size(1) == n,
                errors::InvalidArgument("X [T, n, m] and Y [T, n(, k)] must agree in T and n, "
                                        "got X shape ", x.shape().DebugString(),
                                        " and Y shape ", y.shape().DebugString()));
    OP_REQUIRES(ctx, n >= 1,
                errors::InvalidArgument("X must have at least one sample (n >= 1), got shape ",
                                        x.shape().DebugString()));
    const int64_t k = y.dims() == 3 ? y.dim_size(2) : 1;
    OP_REQUIRES_OK(ctx, CheckPerTask(lam, tasks, "lam"));
    TensorShape w_shape({tasks, m});
    if (y.dims() == 3) w_shape.AddDim(k);
    OP_REQUIRES(ctx, w0.shape() == w_shape,
                errors::InvalidArgument("W0 must have shape ", w_shape.DebugString(),
                                        " ([T, m] for Y [T, n], [T, m, k] for Y [T, n, k]), got ",
                                        w0.shape().DebugString()));
    OP_REQUIRES(ctx, tol.dims() == 0,
                errors::InvalidArgument("tol must be a scalar, got shape ",
                                        tol.shape().DebugString()));
    Options opt{tol.scalar<double>()(), max_epochs_, p0_, screen_, anderson_, support_solve_};
    OP_REQUIRES(ctx, opt.tol >= 0.0,
                errors::InvalidArgument("tol must be >= 0, got ", opt.tol));

    const PerTask<S> lam_of(lam);
    for (int64_t t = 0; t < lam_of.size(); ++t) {
      OP_REQUIRES(ctx, !(lam_of[t] < 0.0),
                  errors::InvalidArgument("lam must be >= 0, got lam[", t, "] = ", lam_of[t]));
    }

    Tensor* w = nullptr;
    Tensor* gap = nullptr;
    Tensor* epochs = nullptr;
    Tensor* converged = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, w_shape, &w));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({tasks}), &gap));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({tasks}), &epochs));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(3, TensorShape({tasks}), &converged));
    if (tasks == 0) return;

    const S* x_data = x.flat<S>().data();
    const S* y_data = y.flat<S>().data();
    const S* w0_data = w0.flat<S>().data();
    S* w_data = w->flat<S>().data();
    S* gap_data = gap->flat<S>().data();
    int32_t* epochs_data = epochs->flat<int32_t>().data();
    bool* converged_data = converged->flat<bool>().data();

    auto work = [&](int64_t begin, int64_t end) {
      TaskSolver<S> solver(n, m, k, opt);
      for (int64_t t = begin; t < end; ++t) {
        const double lam_t = lam_of[t];
        const TaskStats s = solver.Solve(x_data + t * n * m, y_data + t * n * k, lam_t,
                                         w0_data + t * m * k, w_data + t * m * k);
        gap_data[t] = static_cast<S>(s.gap);
        epochs_data[t] = s.epochs;
        converged_data[t] = s.converged;
      }
    };
    // One task is at least a few epochs over X: large enough for Shard to give each thread
    // whole tasks.
    const int64_t cost_per_task = std::max<int64_t>(1, 100 * n * m * k);
    ShardTasks(ctx, tasks, cost_per_task, work);
  }

 private:
  int64_t max_epochs_;
  int64_t p0_;
  bool screen_;
  int64_t anderson_;
  bool support_solve_;
};

REGISTER_KERNEL_BUILDER(
    Name("SdisLassoCd").Device(DEVICE_CPU).TypeConstraint<float>("T"), LassoCdOp<float>);
REGISTER_KERNEL_BUILDER(
    Name("SdisLassoCd").Device(DEVICE_CPU).TypeConstraint<double>("T"), LassoCdOp<double>);

}  // namespace sdis_tf
