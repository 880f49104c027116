// Tensor: a strided view of reference-counted storage. No autograd here (that is autograd/'s
// Variable); this is the plain n-d array every layer above passes around.
//
// Strides are in elements. Views (slice, transpose, reshape of a contiguous tensor) share storage.
// Memory comes from core/allocator so live and peak bytes are counted.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"

namespace sw {

using Shape = std::vector<int64_t>;

std::string shape_str(const Shape& s);
int64_t shape_numel(const Shape& s);

class Storage {
 public:
  explicit Storage(size_t bytes);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }

 private:
  void* data_;
  size_t bytes_;
};

class Tensor {
 public:
  Tensor() = default;  // undefined tensor (no storage)

  static Tensor empty(const Shape& shape, DType dtype = DType::f32);
  static Tensor zeros(const Shape& shape, DType dtype = DType::f32);
  static Tensor full(const Shape& shape, double value, DType dtype = DType::f32);
  static Tensor from_vector(const std::vector<float>& v, const Shape& shape);
  static Tensor from_vector(const std::vector<double>& v, const Shape& shape);
  static Tensor from_vector(const std::vector<int32_t>& v, const Shape& shape);

  bool defined() const { return storage_ != nullptr; }
  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  const Shape& strides() const { return strides_; }
  int64_t ndim() const { return static_cast<int64_t>(shape_.size()); }
  int64_t dim(int64_t i) const;  // negative counts from the end
  int64_t numel() const { return shape_numel(shape_); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  bool is_contiguous() const;

  template <class T>
  T* data() const {
    SW_CHECK(dtype_of<T>() == dtype_, "tensor", "data<", dtype_name(dtype_of<T>()), "> on a ", dtype_name(dtype_),
             " tensor of shape ", shape_str(shape_));
    return static_cast<T*>(storage_->data()) + offset_;
  }
  void* raw_data() const { return static_cast<char*>(storage_->data()) + offset_ * dtype_size(dtype_); }

  // Views sharing storage.
  Tensor slice(int64_t dim, int64_t start, int64_t end) const;  // [start, end) along dim
  Tensor select(int64_t dim, int64_t index) const;              // removes dim
  Tensor transpose(int64_t d0, int64_t d1) const;
  Tensor reshape(const Shape& shape) const;  // contiguous only; one -1 is inferred
  Tensor unsqueeze(int64_t dim) const;

  // Copies.
  Tensor contiguous() const;  // itself when already contiguous
  Tensor clone() const;
  Tensor to(DType dtype) const;
  void copy_from(const Tensor& src);  // same shape, any strides/dtypes
  void fill(double value);
  void zero();

  double item() const;                 // one-element tensor as double
  std::vector<float> to_floats() const;  // any dtype, logical order
  std::vector<double> to_doubles() const;
  std::string describe() const;        // "f32[2, 3]"

  const std::shared_ptr<Storage>& storage() const { return storage_; }

 private:
  std::shared_ptr<Storage> storage_;
  Shape shape_;
  Shape strides_;
  int64_t offset_ = 0;
  DType dtype_ = DType::f32;
};

Shape contiguous_strides(const Shape& shape);

}  // namespace sw
