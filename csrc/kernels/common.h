// Shared host/device helpers for nucfast kernel bodies.
//
// Every per-element body in csrc/kernels/*.h is an `NF_HOST_DEVICE inline` function (or a functor
// with an NF_HOST_DEVICE operator()) that takes a POD argument struct by value. The same body is
// called from a CUDA grid-stride kernel (csrc/ops/cuda/cuda_exec.cuh) and from the CPU emulated grid
// (csrc/kernels/exec_cpu.h). Bodies never allocate, never throw, use 64-bit indices, and reach
// atomics only through the shim below.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define NF_HOST_DEVICE __host__ __device__
#else
#define NF_HOST_DEVICE
#endif

namespace nf {

template <class T>
NF_HOST_DEVICE inline T min(T a, T b) {
  return b < a ? b : a;
}
template <class T>
NF_HOST_DEVICE inline T max(T a, T b) {
  return a < b ? b : a;
}

// ---- atomics shim: CUDA atomics on the device, __atomic builtins on the host ----------------------
// All return the previous value.
NF_HOST_DEVICE inline int64_t atomic_min(int64_t* p, int64_t v) {
#if defined(__CUDA_ARCH__)
  return static_cast<int64_t>(atomicMin(reinterpret_cast<long long*>(p), static_cast<long long>(v)));
#else
  int64_t cur = __atomic_load_n(p, __ATOMIC_RELAXED);
  while (v < cur && !__atomic_compare_exchange_n(p, &cur, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
  }
  return cur;
#endif
}

NF_HOST_DEVICE inline int64_t atomic_max(int64_t* p, int64_t v) {
#if defined(__CUDA_ARCH__)
  return static_cast<int64_t>(atomicMax(reinterpret_cast<long long*>(p), static_cast<long long>(v)));
#else
  int64_t cur = __atomic_load_n(p, __ATOMIC_RELAXED);
  while (cur < v && !__atomic_compare_exchange_n(p, &cur, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
  }
  return cur;
#endif
}

NF_HOST_DEVICE inline int32_t atomic_min(int32_t* p, int32_t v) {
#if defined(__CUDA_ARCH__)
  return atomicMin(p, v);
#else
  int32_t cur = __atomic_load_n(p, __ATOMIC_RELAXED);
  while (v < cur && !__atomic_compare_exchange_n(p, &cur, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
  }
  return cur;
#endif
}

NF_HOST_DEVICE inline int64_t atomic_add(int64_t* p, int64_t v) {
#if defined(__CUDA_ARCH__)
  return static_cast<int64_t>(
      atomicAdd(reinterpret_cast<unsigned long long*>(p), static_cast<unsigned long long>(v)));
#else
  return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
#endif
}

NF_HOST_DEVICE inline int32_t atomic_add(int32_t* p, int32_t v) {
#if defined(__CUDA_ARCH__)
  return atomicAdd(p, v);
#else
  return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
#endif
}

NF_HOST_DEVICE inline double atomic_add(double* p, double v) {
#if defined(__CUDA_ARCH__)
  return atomicAdd(p, v);
#else
  // CAS on the bit pattern: the __atomic_*_n builtins take integers only.
  uint64_t* u = reinterpret_cast<uint64_t*>(p);
  uint64_t cur = __atomic_load_n(u, __ATOMIC_RELAXED);
  for (;;) {
    double d;
    __builtin_memcpy(&d, &cur, sizeof d);
    const double nd = d + v;
    uint64_t nb;
    __builtin_memcpy(&nb, &nd, sizeof nb);
    if (__atomic_compare_exchange_n(u, &cur, nb, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) return d;
  }
#endif
}

// Plain relaxed load/store for values other threads may update concurrently (relaxation loops).
template <class T>
NF_HOST_DEVICE inline T load_relaxed(const T* p) {
#if defined(__CUDA_ARCH__)
  return *static_cast<const volatile T*>(p);
#else
  T v;
  __atomic_load(p, &v, __ATOMIC_RELAXED);
  return v;
#endif
}
template <class T>
NF_HOST_DEVICE inline void store_relaxed(T* p, T v) {
#if defined(__CUDA_ARCH__)
  *static_cast<volatile T*>(p) = v;
#else
  __atomic_store(p, &v, __ATOMIC_RELAXED);
#endif
}

// ---- bit casts (host: memcpy; device: intrinsics) -----------------------------------------------------
NF_HOST_DEVICE inline uint32_t bits_of(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
#endif
}
NF_HOST_DEVICE inline uint64_t bits_of(double x) {
#if defined(__CUDA_ARCH__)
  return static_cast<uint64_t>(__double_as_longlong(x));
#else
  uint64_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
#endif
}
NF_HOST_DEVICE inline float from_bits(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
#endif
}
NF_HOST_DEVICE inline double from_bits(uint64_t u) {
#if defined(__CUDA_ARCH__)
  return __longlong_as_double(static_cast<long long>(u));
#else
  double x;
  std::memcpy(&x, &u, sizeof x);
  return x;
#endif
}

}  // namespace nf
