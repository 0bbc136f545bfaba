// Standalone timing of the fo-pooling CUDA kernels (csrc/fo_pool_kernels.cuh,
// the same code the extension runs) over time-loop unroll factors and block
// sizes, in float32 and bfloat16, against a measured device-to-device copy.
// It is how the unroll rule in csrc/fo_pool_cuda.cu was chosen.
//
//   nvcc -O3 -std=c++17 -arch=sm_90 -I csrc \
//        benchmarks/cuda/unroll_sweep.cu -o /tmp/unroll_sweep && /tmp/unroll_sweep
//
// Prints one line per (shape, dtype, kernel, unroll, threads): time (median
// of 15 after 3 warm-ups, CUDA events), GB/s counting the bytes each kernel
// must read and write once, and % of the copy bandwidth.  Every variant's
// output is checked against unroll 1 (same arithmetic up to multiply-add
// contraction: float32 to 1e-5, bfloat16 to 1e-2 relative).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "fo_pool_kernels.cuh"

using qrnn_lm::FoPoolParams;
using qrnn_lm::kernels::fo_pool_bwd_kernel;
using qrnn_lm::kernels::fo_pool_fwd_kernel;

#define CHECK(x)                                                                      \
  do {                                                                                \
    cudaError_t e_ = (x);                                                             \
    if (e_ != cudaSuccess) {                                                          \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x,                 \
                   cudaGetErrorString(e_));                                           \
      std::exit(1);                                                                   \
    }                                                                                 \
  } while (0)

template <typename T>
__global__ void fill(T* x, int64_t n, uint32_t seed, float lo, float hi) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    uint32_t v = (uint32_t)i * 2654435761u ^ seed;
    v ^= v >> 15; v *= 2246822519u; v ^= v >> 13; v *= 3266489917u; v ^= v >> 16;
    x[i] = static_cast<T>(lo + (hi - lo) * (v * (1.0f / 4294967296.0f)));
  }
}

// number of elements where |a - b| > tol * (1 + |a|), NaN counted
template <typename T>
__global__ void count_diff(const T* a, const T* b, int64_t n, float tol,
                           unsigned long long* out) {
  unsigned long long d = 0;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    const float x = static_cast<float>(a[i]), y = static_cast<float>(b[i]);
    d += !(fabsf(x - y) <= tol * (1.0f + fabsf(x)));
  }
  if (d) atomicAdd(out, d);
}

template <typename F>
float time_ms(F&& launch, int warmup = 3, int reps = 15) {
  cudaEvent_t a, b;
  CHECK(cudaEventCreate(&a));
  CHECK(cudaEventCreate(&b));
  for (int i = 0; i < warmup; ++i) launch();
  CHECK(cudaGetLastError());
  CHECK(cudaDeviceSynchronize());
  std::vector<float> ts;
  for (int i = 0; i < reps; ++i) {
    CHECK(cudaEventRecord(a));
    launch();
    CHECK(cudaEventRecord(b));
    CHECK(cudaEventSynchronize(b));
    float ms;
    CHECK(cudaEventElapsedTime(&ms, a, b));
    ts.push_back(ms);
  }
  CHECK(cudaGetLastError());
  std::sort(ts.begin(), ts.end());
  CHECK(cudaEventDestroy(a));
  CHECK(cudaEventDestroy(b));
  return ts[ts.size() / 2];
}

double copy_gbs() {
  const size_t bytes = size_t(1) << 30;
  void *src, *dst;
  CHECK(cudaMalloc(&src, bytes));
  CHECK(cudaMalloc(&dst, bytes));
  CHECK(cudaMemset(src, 1, bytes));
  float ms = time_ms([&] { CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice)); });
  CHECK(cudaFree(src));
  CHECK(cudaFree(dst));
  return 2.0 * bytes / (ms * 1e-3) / 1e9;
}

template <typename S, int G, int U>
void launch(const FoPoolParams& p, bool bwd, int threads) {
  const int64_t blocks = (p.B * p.H + threads - 1) / threads;
  if (bwd)
    fo_pool_bwd_kernel<S, float, G, U><<<blocks, threads>>>(p);
  else
    fo_pool_fwd_kernel<S, float, G, U><<<blocks, threads>>>(p);
}

template <typename S, int G>
void launch_u(int U, const FoPoolParams& p, bool bwd, int threads) {
  switch (U) {
    case 1: launch<S, G, 1>(p, bwd, threads); break;
    case 2: launch<S, G, 2>(p, bwd, threads); break;
    case 4: launch<S, G, 4>(p, bwd, threads); break;
    case 8: launch<S, G, 8>(p, bwd, threads); break;
    default: launch<S, G, 16>(p, bwd, threads); break;
  }
}

template <typename S, int G>
void sweep(const char* dtype, int64_t T, int64_t B, int64_t H, double copy) {
  const int64_t n = T * B * H;
  const int64_t W = G == 0 ? 1 : G;
  S *in, *z, *c, *hh, *gout, *gin, *gz, *cn, *gcn, *gc0, *ref;
  const size_t es = sizeof(S);
  CHECK(cudaMalloc(&in, n * W * es));
  CHECK(cudaMalloc(&z, n * es));
  CHECK(cudaMalloc(&c, n * es));
  CHECK(cudaMalloc(&hh, n * es));
  CHECK(cudaMalloc(&gout, n * es));
  CHECK(cudaMalloc(&gin, n * W * es));
  CHECK(cudaMalloc(&gz, n * es));
  CHECK(cudaMalloc(&ref, n * W * es));
  CHECK(cudaMalloc(&cn, B * H * es));
  CHECK(cudaMalloc(&gcn, B * H * es));
  CHECK(cudaMalloc(&gc0, B * H * es));
  if (G == 0) {
    fill<<<1024, 256>>>(in, n, 1, 0.05f, 0.95f);
  } else {
    fill<<<1024, 256>>>(in, n * W, 1, -3.f, 3.f);
  }
  fill<<<1024, 256>>>(z, n, 2, -1.f, 1.f);
  fill<<<1024, 256>>>(gout, n, 3, -1.f, 1.f);
  fill<<<1024, 256>>>(gcn, B * H, 4, -1.f, 1.f);
  CHECK(cudaGetLastError());

  FoPoolParams p;
  p.T = T; p.B = B; p.H = H; p.G = G;
  p.f = in; p.z = z; p.gates = in;
  p.c = c; p.h = hh; p.cn = cn;
  p.grad_out = gout; p.grad_cn = gcn;
  p.grad_f = gin; p.grad_z = gz; p.grad_gates = gin; p.grad_c0 = gc0;

  // bytes each kernel must move once (see bench_fo_pool.py)
  const double fwd_bytes = (G == 0 ? 3 : G == 2 ? 3 : 5) * double(n) * es;
  const double bwd_bytes = (G == 0 ? 6 : G == 2 ? 6 : 8) * double(n) * es;
  const char* name = G == 0 ? "plain" : G == 2 ? "fused2" : "fused3";
  const int unrolls[] = {1, 2, 4, 8, 16};
  for (int bwd = 0; bwd < 2; ++bwd) {
    // reference output: unroll 1, 128 threads (the forward's c feeds the backward)
    launch_u<S, G>(1, p, false, 128);
    S* out = bwd ? gin : (G == 3 ? hh : c);
    const size_t out_bytes = (bwd ? n * W : n) * es;
    if (bwd) launch_u<S, G>(1, p, true, 128);
    CHECK(cudaMemcpy(ref, out, out_bytes, cudaMemcpyDeviceToDevice));
    unsigned long long* diff;
    CHECK(cudaMalloc(&diff, sizeof(unsigned long long)));
    for (int U : unrolls) {
      for (int threads : {128, 256}) {
        CHECK(cudaMemset(out, 0xff, out_bytes));
        float ms = time_ms([&] { launch_u<S, G>(U, p, bwd, threads); });
        CHECK(cudaMemset(diff, 0, sizeof(unsigned long long)));
        // the unrolled versions may contract multiply-adds differently: allow rounding
        count_diff<<<1024, 256>>>(ref, out, (int64_t)(out_bytes / es),
                                  sizeof(S) == 4 ? 1e-5f : 1e-2f, diff);
        unsigned long long nd = 0;
        CHECK(cudaMemcpy(&nd, diff, sizeof nd, cudaMemcpyDeviceToHost));
        const bool same = nd == 0;
        const double gbs = (bwd ? bwd_bytes : fwd_bytes) / (ms * 1e-3) / 1e9;
        std::printf("%5lldx%4lldx%5lld %-8s %-6s %s U=%-2d thr=%3d  %8.3f ms %7.0f GB/s %4.0f%%%s\n",
                    (long long)T, (long long)B, (long long)H, dtype, name, bwd ? "bwd" : "fwd",
                    U, threads, ms, gbs, 100 * gbs / copy, same ? "" : "  MISMATCH");
        if (!same) std::printf("      %llu elements differ from unroll 1\n", nd);
        std::fflush(stdout);
      }
    }
    CHECK(cudaFree(diff));
  }
  for (void* x : {(void*)in, (void*)z, (void*)c, (void*)hh, (void*)gout, (void*)gin,
                  (void*)gz, (void*)ref, (void*)cn, (void*)gcn, (void*)gc0})
    CHECK(cudaFree(x));
}

int main(int argc, char** argv) {
  cudaDeviceProp prop;
  CHECK(cudaGetDeviceProperties(&prop, 0));
  const double copy = copy_gbs();
  std::printf("device %s, %d SMs; copy %.0f GB/s (read+write, 1 GiB)\n", prop.name,
              prop.multiProcessorCount, copy);
  // (T, B, H): B*H columns from 8k to 512k; T*B*H >= 32M except the LM-sized last
  const int64_t shapes[][3] = {{64, 512, 1024}, {256, 128, 1024}, {1024, 32, 1024},
                               {4096, 8, 1024}, {128, 64, 512}};
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  for (auto& s : shapes) {
    sweep<float, 0>("float32", s[0], s[1], s[2], copy);
    sweep<float, 3>("float32", s[0], s[1], s[2], copy);
    if (!quick) {
      sweep<__nv_bfloat16, 0>("bfloat16", s[0], s[1], s[2], copy);
      sweep<__nv_bfloat16, 3>("bfloat16", s[0], s[1], s[2], copy);
    }
  }
  return 0;
}
