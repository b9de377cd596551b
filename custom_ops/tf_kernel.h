// What every sdis_tf CPU kernel uses from TensorFlow: op and kernel registration, tensors,
// shape inference and the CPU thread pool, with the names the kernels refer to.
#ifndef SDIS_TF_CUSTOM_OPS_TF_KERNEL_H_
#define SDIS_TF_CUSTOM_OPS_TF_KERNEL_H_

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/util/work_sharder.h"

namespace sdis_tf {

using ::tensorflow::DEVICE_CPU;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Status;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
using ::tensorflow::shape_inference::DimensionHandle;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;
namespace errors = ::tensorflow::errors;

// A per-task parameter (lam) given as a scalar or as a vector [T]: the check of its shape, and
// its value for task t as a double.
inline Status CheckPerTask(const Tensor& value, int64_t tasks, const char* name) {
  if (value.dims() == 0 || (value.dims() == 1 && value.dim_size(0) == tasks)) return Status();
  return errors::InvalidArgument(name, " must be a scalar or have shape [T] = [", tasks,
                                 "], got shape ", value.shape().DebugString());
}

template <typename S>
class PerTask {
 public:
  explicit PerTask(const Tensor& value)
      : data_(value.flat<S>().data()), size_(value.dims() == 0 ? 1 : value.dim_size(0)) {}
  int64_t size() const { return size_; }  // 1 for a scalar
  double operator[](int64_t t) const { return static_cast<double>(data_[size_ == 1 ? 0 : t]); }

 private:
  const S* data_;
  int64_t size_;
};

// Runs work(begin, end) over [0, tasks) on the op's CPU thread pool, cost_per_task being the
// estimated cost of one task (TensorFlow's Shard splits the range by it).
template <typename Work>
void ShardTasks(OpKernelContext* ctx, int64_t tasks, int64_t cost_per_task, Work work) {
  auto* threads = ctx->device()->tensorflow_cpu_worker_threads();
  ::tensorflow::Shard(threads->num_threads, threads->workers, tasks, cost_per_task, work);
}

}  // namespace sdis_tf

#endif  // SDIS_TF_CUSTOM_OPS_TF_KERNEL_H_
