#include "core/tensor.h"

#include <cstring>

#include "core/allocator.h"
#include "core/checked.h"

namespace sw {

std::string shape_str(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

int64_t shape_numel(const Shape& s) {
  // Checked: a shape from a config or a file must not wrap to a small count and under-allocate.
  int64_t n = 1;
  for (int64_t d : s) {
    SW_CHECK(d >= 0, "tensor", "negative dimension in shape ", shape_str(s));
    SW_CHECK(!__builtin_mul_overflow(n, d, &n) && n <= kMaxTensorElements, "tensor", "shape ", shape_str(s),
             " has more than 2^48 elements");
  }
  return n;
}

Shape contiguous_strides(const Shape& shape) {
  Shape st(shape.size());
  int64_t acc = 1;
  for (int64_t i = static_cast<int64_t>(shape.size()) - 1; i >= 0; --i) {
    st[i] = acc;
    acc *= shape[i];
  }
  return st;
}

Storage::Storage(size_t bytes) : data_(tensor_alloc(bytes)), bytes_(bytes) {}
Storage::~Storage() { tensor_free(data_, bytes_); }

Tensor Tensor::empty(const Shape& shape, DType dtype) {
  const int64_t bytes = checked_mul(shape_numel(shape), static_cast<int64_t>(dtype_size(dtype)), "tensor",
                                    "bytes of shape " + shape_str(shape), kMaxTensorElements);
  Tensor t;
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  t.dtype_ = dtype;
  t.storage_ = std::make_shared<Storage>(static_cast<size_t>(bytes));
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype) {
  Tensor t = empty(shape, dtype);
  std::memset(t.raw_data(), 0, t.nbytes());
  return t;
}

Tensor Tensor::full(const Shape& shape, double value, DType dtype) {
  Tensor t = empty(shape, dtype);
  t.fill(value);
  return t;
}

template <class T>
static Tensor from_vec(const std::vector<T>& v, const Shape& shape) {
  SW_CHECK(static_cast<int64_t>(v.size()) == shape_numel(shape), "tensor", "from_vector: ", v.size(),
           " values for shape ", shape_str(shape));
  Tensor t = Tensor::empty(shape, dtype_of<T>());
  if (!v.empty()) std::memcpy(t.raw_data(), v.data(), v.size() * sizeof(T));
  return t;
}
Tensor Tensor::from_vector(const std::vector<float>& v, const Shape& s) { return from_vec(v, s); }
Tensor Tensor::from_vector(const std::vector<double>& v, const Shape& s) { return from_vec(v, s); }
Tensor Tensor::from_vector(const std::vector<int32_t>& v, const Shape& s) { return from_vec(v, s); }

int64_t Tensor::dim(int64_t i) const {
  int64_t n = ndim();
  SW_CHECK(i >= -n && i < n, "tensor", "dim ", i, " out of range for shape ", shape_str(shape_));
  return shape_[i < 0 ? i + n : i];
}

bool Tensor::is_contiguous() const {
  int64_t acc = 1;
  for (int64_t i = ndim() - 1; i >= 0; --i) {
    if (shape_[i] != 1 && strides_[i] != acc) return false;
    acc *= shape_[i];
  }
  return true;
}

static int64_t norm_dim(int64_t d, int64_t n, const char* op, const Shape& s) {
  SW_CHECK(d >= -n && d < n, op, "dim ", d, " out of range for shape ", shape_str(s));
  return d < 0 ? d + n : d;
}

Tensor Tensor::slice(int64_t d, int64_t start, int64_t end) const {
  d = norm_dim(d, ndim(), "slice", shape_);
  SW_CHECK(0 <= start && start <= end && end <= shape_[d], "slice", "range [", start, ", ", end, ") out of bounds for dim ",
           d, " of shape ", shape_str(shape_));
  Tensor t = *this;
  t.offset_ += start * strides_[d];
  t.shape_[d] = end - start;
  return t;
}

Tensor Tensor::select(int64_t d, int64_t index) const {
  d = norm_dim(d, ndim(), "select", shape_);
  SW_CHECK(0 <= index && index < shape_[d], "select", "index ", index, " out of bounds for dim ", d, " of shape ",
           shape_str(shape_));
  Tensor t = *this;
  t.offset_ += index * strides_[d];
  t.shape_.erase(t.shape_.begin() + d);
  t.strides_.erase(t.strides_.begin() + d);
  return t;
}

Tensor Tensor::transpose(int64_t d0, int64_t d1) const {
  d0 = norm_dim(d0, ndim(), "transpose", shape_);
  d1 = norm_dim(d1, ndim(), "transpose", shape_);
  Tensor t = *this;
  std::swap(t.shape_[d0], t.shape_[d1]);
  std::swap(t.strides_[d0], t.strides_[d1]);
  return t;
}

Tensor Tensor::reshape(const Shape& shape) const {
  Shape s = shape;
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      SW_CHECK(infer < 0, "reshape", "more than one -1 in ", shape_str(shape));
      infer = static_cast<int64_t>(i);
    } else {
      known *= s[i];
    }
  }
  if (infer >= 0) {
    SW_CHECK(known > 0 && numel() % known == 0, "reshape", "cannot infer -1: ", shape_str(shape_), " to ", shape_str(shape));
    s[infer] = numel() / known;
  }
  SW_CHECK(shape_numel(s) == numel(), "reshape", shape_str(shape_), " (", numel(), " elements) to ", shape_str(shape));
  SW_CHECK(is_contiguous(), "reshape", "needs a contiguous tensor, got shape ", shape_str(shape_), " strides ",
           shape_str(strides_), " (call contiguous() first)");
  Tensor t = *this;
  t.shape_ = s;
  t.strides_ = contiguous_strides(s);
  return t;
}

Tensor Tensor::unsqueeze(int64_t d) const {
  int64_t n = ndim() + 1;
  d = norm_dim(d, n, "unsqueeze", shape_);
  Tensor t = *this;
  int64_t stride = d < ndim() ? strides_[d] * shape_[d] : 1;
  t.shape_.insert(t.shape_.begin() + d, 1);
  t.strides_.insert(t.strides_.begin() + d, stride);
  return t;
}

namespace {

// Calls f(dst_offset, src_offset) for every element in logical order.
template <class F>
void for_each_index(const Shape& shape, const Shape& st_a, const Shape& st_b, F f) {
  int64_t n = shape_numel(shape);
  if (n == 0) return;
  int64_t nd = static_cast<int64_t>(shape.size());
  std::vector<int64_t> idx(nd, 0);
  int64_t oa = 0, ob = 0;
  for (int64_t i = 0; i < n; ++i) {
    f(oa, ob);
    for (int64_t d = nd - 1; d >= 0; --d) {
      if (++idx[d] < shape[d]) {
        oa += st_a[d];
        ob += st_b[d];
        break;
      }
      oa -= st_a[d] * (shape[d] - 1);
      ob -= st_b[d] * (shape[d] - 1);
      idx[d] = 0;
    }
  }
}

double load_as_double(const void* base, DType t, int64_t i) {
  switch (t) {
    case DType::f32: return static_cast<const float*>(base)[i];
    case DType::bf16: return bf16_to_f32(static_cast<const bf16*>(base)[i]);
    case DType::f64: return static_cast<const double*>(base)[i];
    case DType::i32: return static_cast<const int32_t*>(base)[i];
  }
  return 0;
}

void store_double(void* base, DType t, int64_t i, double v) {
  switch (t) {
    case DType::f32: static_cast<float*>(base)[i] = static_cast<float>(v); break;
    case DType::bf16: static_cast<bf16*>(base)[i] = f32_to_bf16(static_cast<float>(v)); break;
    case DType::f64: static_cast<double*>(base)[i] = v; break;
    case DType::i32: static_cast<int32_t*>(base)[i] = static_cast<int32_t>(v); break;
  }
}

}  // namespace

void Tensor::copy_from(const Tensor& src) {
  SW_CHECK(src.shape_ == shape_, "copy", "shape ", shape_str(src.shape_), " into ", shape_str(shape_));
  if (src.dtype_ == dtype_ && is_contiguous() && src.is_contiguous()) {
    std::memcpy(raw_data(), src.raw_data(), nbytes());
    return;
  }
  if (dtype_ == DType::bf16 && src.dtype_ == DType::f32 && is_contiguous() && src.is_contiguous()) {
    convert_f32_to_bf16(src.data<float>(), data<bf16>(), numel());
    return;
  }
  if (dtype_ == DType::f32 && src.dtype_ == DType::bf16 && is_contiguous() && src.is_contiguous()) {
    convert_bf16_to_f32(src.data<bf16>(), data<float>(), numel());
    return;
  }
  void* d = raw_data();
  const void* s = src.raw_data();
  DType dt = dtype_, st = src.dtype_;
  if (dt == st && dt == DType::f32) {
    float* df = static_cast<float*>(d);
    const float* sf = static_cast<const float*>(s);
    for_each_index(shape_, strides_, src.strides_, [&](int64_t a, int64_t b) { df[a] = sf[b]; });
    return;
  }
  for_each_index(shape_, strides_, src.strides_,
                 [&](int64_t a, int64_t b) { store_double(d, dt, a, load_as_double(s, st, b)); });
}

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  return clone();
}

Tensor Tensor::clone() const {
  Tensor t = empty(shape_, dtype_);
  t.copy_from(*this);
  return t;
}

Tensor Tensor::to(DType dtype) const {
  if (dtype == dtype_) return *this;
  Tensor t = empty(shape_, dtype);
  t.copy_from(*this);
  return t;
}

void Tensor::fill(double value) {
  void* d = raw_data();
  DType dt = dtype_;
  Shape zero(shape_.size(), 0);
  for_each_index(shape_, strides_, zero, [&](int64_t a, int64_t) { store_double(d, dt, a, value); });
}

void Tensor::zero() {
  if (is_contiguous()) {
    std::memset(raw_data(), 0, nbytes());
  } else {
    fill(0.0);
  }
}

double Tensor::item() const {
  SW_CHECK(numel() == 1, "item", "needs one element, got shape ", shape_str(shape_));
  return load_as_double(raw_data(), dtype_, 0);
}

std::vector<double> Tensor::to_doubles() const {
  std::vector<double> out(numel());
  const void* s = raw_data();
  DType st = dtype_;
  size_t k = 0;
  Shape zero(shape_.size(), 0);
  for_each_index(shape_, strides_, zero, [&](int64_t a, int64_t) { out[k++] = load_as_double(s, st, a); });
  return out;
}

std::vector<float> Tensor::to_floats() const {
  if (dtype_ == DType::f32 && is_contiguous()) return std::vector<float>(data<float>(), data<float>() + numel());
  std::vector<double> d = to_doubles();
  return std::vector<float>(d.begin(), d.end());
}

std::string Tensor::describe() const { return std::string(dtype_name(dtype_)) + shape_str(shape_); }

}  // namespace sw
