// Fused CPU recurrences (LSTM, cuDNN-form GRU) as XLA FFI custom calls: forward and backward
// over all time steps in one call each. Compiled on first use by rnnlab/fused/cpu.py (g++ -O3
// -march=native). W_hh is packed once per call into NR-column panels and every step's GEMM
// runs a register-blocked micro-kernel over them (below: MKL's packed GEMM dispatches its
// generic code path on AMD CPUs and measured slower than XLA's own dot here; OpenBLAS has no
// packed API). The gate arithmetic runs in the same time loop, over contiguous rows, written so
// that the compiler vectorises it (branch-free exp / tanh below; -fno-trapping-math, else g++
// keeps the loops scalar because floor may raise FE_INEXACT). Threads: the hidden units are
// split over 2 threads for large steps ($RNNLAB_CPU_THREADS), each with its own slice of the
// packed weights and its own GEMM, one barrier per step; the helper threads come from XLA's
// intra-op pool (`parallel` below). Layouts (row-major, float32):
//
//   xp [T, B, G] input half of the gates (time-major, already in the order of the recurrence;
//                 LSTM: x W_ih without bias, G = 4H, gates i f g o;
//                 GRU:  x W_ih + b_ih,        G = 3H, gates r z n)
//   w  [H, G]    W_hh;  b [G] (LSTM: b; GRU: b_hh);  h0, c0 [B, H];  mask [T, B] or empty
//   hs [T, B, H] the carry h after every step (before masking of the outputs)
//
// A masked step (mask 0) keeps the carry. Backward: per step one [B, G] x [G, H] GEMM against
// packed W_hh^T; it returns dZ for all steps and db = sum dZ (accumulated in float64 while dZ is
// in cache), and the caller computes the weight gradients as one large matmul (XLA's) from
// xht, which the forward writes when it saves activations: LSTM [x; h_prev]^T [I + H, T B]
// (xs [T, B, I] is xp's input), GRU h_prev^T [H, T B].

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <type_traits>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// --- branch-free float32 exp / sigmoid / tanh (Cephes polynomials), vectorisable -------------

inline float exp_f(float x) {
  x = std::min(std::max(x, -87.3f), 88.3f);
  float n = std::floor(x * 1.44269504088896341f + 0.5f);
  float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

inline float sigmoid_f(float x) { return 1.0f / (1.0f + exp_f(-x)); }

inline float tanh_f(float x) {
  float a = std::fabs(x);
  float z = x * x;  // small |x|: odd polynomial (no cancellation)
  float small = ((((-5.70498872745e-3f * z + 2.06390887954e-2f) * z - 5.37397155531e-2f) * z +
                  1.33314422036e-1f) * z - 3.33332819422e-1f) * z * x + x;
  float big = 1.0f - 2.0f / (exp_f(2.0f * a) + 1.0f);
  big = std::copysign(big, x);
  return a < 0.625f ? small : big;
}

// --- the per-step GEMM: C[M, N] = A[M, K] W with W packed once per call ---------------------
// W is copied into panels of NR columns ([K, NR] each, zero-padded), so that the micro-kernel
// reads it with aligned vector loads and keeps an MR x NR block of C in registers across the
// whole K loop; each panel (K * NR floats) stays in L1/L2 while all row blocks of A pass by.

#if defined(__AVX512F__)
constexpr int VW = 16, MR = 8;  // 32 zmm registers: 16 accumulators
#else
constexpr int VW = 8, MR = 4;  // 16 ymm registers: 8 accumulators
#endif
constexpr int NR = 2 * VW;
typedef float vec __attribute__((vector_size(VW * sizeof(float))));

float *alloc(int64_t floats) {
  return static_cast<float *>(std::aligned_alloc(64, ((floats * 4 + 63) / 64) * 64));
}

struct Packed {
  float *p = nullptr;
  int64_t k, n, panels;
  // op(W)[kk, j] = src[kk * sk + j * sn] for kk < K, j < N
  Packed(const float *src, int64_t K, int64_t N, int64_t sk, int64_t sn)
      : k(K), n(N), panels((N + NR - 1) / NR) {
    p = alloc(panels * K * NR);
    for (int64_t q = 0; q < panels; ++q)
      for (int64_t kk = 0; kk < K; ++kk) {
        float *dst = p + (q * K + kk) * NR;
        for (int jj = 0; jj < NR; ++jj) {
          const int64_t j = q * NR + jj;
          dst[jj] = j < N ? src[kk * sk + j * sn] : 0.0f;
        }
      }
  }
  ~Packed() { std::free(p); }
  Packed(const Packed &) = delete;
  Packed &operator=(const Packed &) = delete;

  template <int R>
  void micro(const float *a, int64_t lda, const float *panel, float *c, int64_t ldc,
             int64_t cols) const {
    vec acc0[R], acc1[R];
    for (int r = 0; r < R; ++r) acc0[r] = acc1[r] = vec{};
#pragma GCC unroll 4
    for (int64_t kk = 0; kk < k; ++kk) {
      const vec w0 = *reinterpret_cast<const vec *>(panel + kk * NR);
      const vec w1 = *reinterpret_cast<const vec *>(panel + kk * NR + VW);
      for (int r = 0; r < R; ++r) {
        const float x = a[r * lda + kk];
        acc0[r] += x * w0;
        acc1[r] += x * w1;
      }
    }
    for (int r = 0; r < R; ++r) {
      float *row = c + r * ldc;
      if (cols == NR) {
        std::memcpy(row, &acc0[r], sizeof(vec));
        std::memcpy(row + VW, &acc1[r], sizeof(vec));
      } else {
        alignas(64) float tmp[NR];
        std::memcpy(tmp, &acc0[r], sizeof(vec));
        std::memcpy(tmp + VW, &acc1[r], sizeof(vec));
        std::memcpy(row, tmp, cols * sizeof(float));
      }
    }
  }

  // c[m, n] = a[m, k] op(W)  (a and c row-major, contiguous rows)
  void apply(const float *a, int64_t m, float *c) const {
    for (int64_t q = 0; q < panels; ++q) {
      const float *panel = p + q * k * NR;
      const int64_t cols = std::min<int64_t>(NR, n - q * NR);
      for (int64_t i = 0; i < m; i += MR) {
        const float *ai = a + i * k;
        float *ci = c + i * n + q * NR;
        switch (std::min<int64_t>(MR, m - i)) {
#define RNNLAB_CASE(R) \
  case R:              \
    micro<R>(ai, k, panel, ci, n, cols); \
    break;
          RNNLAB_CASE(1) RNNLAB_CASE(2) RNNLAB_CASE(3) RNNLAB_CASE(4)
          RNNLAB_CASE(5) RNNLAB_CASE(6) RNNLAB_CASE(7) RNNLAB_CASE(8)
#undef RNNLAB_CASE
        }
      }
    }
  }
};

// --- stores of saved activations: streamed past the caches -----------------------------------
// The forward writes ~6x more saved activations per step than it keeps (the gates and c for the
// backward): plain stores would read every line first and push the packed W_hh out of L2.
// Non-temporal stores where dst is 64-byte aligned and n a multiple of 16; else memcpy.
inline void stream_copy(float *dst, const float *src, int64_t n) {
#if defined(__AVX512F__)
  if ((reinterpret_cast<uintptr_t>(dst) & 63) == 0 && n % 16 == 0) {
    for (int64_t j = 0; j < n; j += 16) _mm512_stream_ps(dst + j, _mm512_loadu_ps(src + j));
    return;
  }
#endif
  std::memcpy(dst, src, n * sizeof(float));
}

// One step's rows (x_t or h_{t-1}, row stride H) transposed for the weight gradient,
// dst[j * ld + r] = src[r * H + j] for r < B and the own columns j in [lo, hi): the caller's
// xht [I + H, T B] x dZ [T B, G] then reads its left operand in the layout XLA's dot runs
// fastest (on the L LSTM's second layer 88 ms against 114 for x^T dZ and h_prev^T dZ, and no
// concatenation of h0 with hs[:-1]); streamed where a row's B floats are whole aligned vectors.
inline void store_transposed(float *dst, int64_t ld, const float *src, int64_t H, int64_t B,
                             int64_t lo, int64_t hi) {
  for (int64_t j = lo; j < hi; ++j) {
    float *d = dst + j * ld;
    int64_t r = 0;
#if defined(__AVX512F__)
    if ((reinterpret_cast<uintptr_t>(d) & 63) == 0) {
      const __m512i idx = _mm512_mullo_epi32(
          _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
          _mm512_set1_epi32(static_cast<int>(H)));
      for (; r + 16 <= B; r += 16)
        _mm512_stream_ps(d + r, _mm512_i32gather_ps(idx, src + r * H + j, 4));
    }
#endif
    for (; r < B; ++r) d[r] = src[r * H + j];
  }
}

// per-thread sums over all rows and steps of the own units [lo, lo + u) of each gate (db), in
// float64 while the gradient row is in cache; store() writes them into db [gates * H]
struct GateSums {
  std::vector<double> s;
  int64_t u;
  GateSums(int gates, int64_t u_) : s(gates * u_, 0.0), u(u_) {}
  double *gate(int q) { return s.data() + q * u; }
  void store(float *db, int64_t H, int64_t lo) const {
    for (size_t q = 0; u > 0 && q < s.size() / u; ++q)
      for (int64_t j = 0; j < u; ++j) db[q * H + lo + j] = static_cast<float>(s[q * u + j]);
  }
};

// --- threads: the hidden units split in contiguous blocks, one per thread ---------------------
// Each thread owns the units [lo, hi) of every gate: its own packed slice of W_hh (forward) or
// W_hh^T (backward), its own GEMM per step and the gate arithmetic of its units; one barrier
// per step publishes the new h (forward) or dZ (backward) to the other threads.

struct Barrier {
  std::atomic<int> count{0}, generation{0};
  int n;
  explicit Barrier(int n_) : n(n_) {}
  void wait() {
    if (n == 1) return;
    int g = generation.load(std::memory_order_acquire);
    if (count.fetch_add(1, std::memory_order_acq_rel) == n - 1) {
      count.store(0, std::memory_order_relaxed);
      generation.fetch_add(1, std::memory_order_release);
      return;
    }
    for (int spins = 0; generation.load(std::memory_order_acquire) == g; ++spins) {
      if (spins < 4000) _mm_pause();
      else std::this_thread::yield();  // a shared machine: let the other thread run
    }
  }
};

// Threads for one call: $RNNLAB_CPU_THREADS, else 2 (at most the CPU count) where a step's
// GEMM has >= 4 MFLOP (all of workloads A, B and L: on a quiet machine the L LSTM training
// step runs at 31.5k tokens/s on 2 threads against 23.3k on one), else 1:
// below that the per-step barrier (~1 us quiet, far more on a loaded machine, where the
// partner thread may be descheduled at it) costs more than the split saves. Never more than
// H / 16.
int num_threads(int64_t B, int64_t H, int64_t G) {
  const char *env = std::getenv("RNNLAB_CPU_THREADS");
  int n = 1;
  if (env && *env) n = std::atoi(env);
  else if (2.0 * B * H * G >= 4e6) n = std::min(2u, std::max(1u, std::thread::hardware_concurrency()));
  n = std::max(1, std::min(n, 16));
  return static_cast<int>(std::min<int64_t>(n, std::max<int64_t>(1, H / 16)));
}

// unit block k of n over H units, boundaries on multiples of 8 (whole SIMD vectors)
void block(int64_t H, int k, int n, int64_t &lo, int64_t &hi) {
  auto edge = [&](int i) { return i == n ? H : std::min(H, (H * i / n + 7) / 8 * 8); };
  lo = edge(k);
  hi = edge(k + 1);
}

// Runs f(0) .. f(n - 1) at once, f(0) on the calling thread. The others run on XLA's intra-op
// pool (the threads that run XLA's own matmuls: two threads of our own beside them
// oversubscribe the cores while they finish or spin, and each step's barrier then waits for a
// descheduled partner). Each block is claimed exactly once: by a pool thread that starts it
// within ~100 us or, failing that (every pool thread busy, perhaps waiting on this very call),
// by a thread of our own, so the barrier can never wait for a block that is not running (nor
// run one inline on the caller, as Schedule does without a pool). Which thread runs a block
// changes nothing in its arithmetic.
template <class F>
void parallel(ffi::ThreadPool &xla_pool, int n, F &&f) {
  if (n == 1) return f(0);
  struct Claims {
    std::atomic<int> state[16];  // per block: 0 open, 1 a pool thread's, 2 ours
    std::atomic<int> done{0};    // blocks finished on the pool
    std::thread::id caller;      // Schedule runs a task inline when there is no pool
  };
  auto claims = std::make_shared<Claims>();
  claims->caller = std::this_thread::get_id();
  for (int k = 0; k < n; ++k) claims->state[k].store(0, std::memory_order_relaxed);
  F *fn = &f;  // read by a pool task only after it claimed its block, i.e. while we wait
  for (int k = 1; k < n; ++k)
    xla_pool.Schedule([claims, fn, k] {
      int open = 0;
      if (std::this_thread::get_id() == claims->caller ||
          !claims->state[k].compare_exchange_strong(open, 1, std::memory_order_acq_rel))
        return;
      (*fn)(k);
      claims->done.fetch_add(1, std::memory_order_release);
    });
  auto unclaimed = [&] {
    for (int k = 1; k < n; ++k)
      if (claims->state[k].load(std::memory_order_acquire) == 0) return true;
    return false;
  };
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::microseconds(100);
  while (unclaimed() && std::chrono::steady_clock::now() < deadline) _mm_pause();
  std::vector<std::thread> own;
  int on_pool = 0;
  for (int k = 1; k < n; ++k) {
    int open = 0;
    if (claims->state[k].compare_exchange_strong(open, 2, std::memory_order_acq_rel))
      own.emplace_back(f, k);
    else
      ++on_pool;
  }
  f(0);
  for (auto &t : own) t.join();
  for (int spins = 0; claims->done.load(std::memory_order_acquire) < on_pool; ++spins)
    if (spins < 4000) _mm_pause();
    else std::this_thread::yield();
}


// W[:, units lo..hi of each of `gates` blocks of H columns] as the packed operand of
// z[B, gates * u] = h[B, H] W_own: column q * u + j of W_own is column q * H + lo + j of W
Packed *pack_units(const float *w, int64_t H, int gates, int64_t lo, int64_t hi) {
  const int64_t u = hi - lo, G = gates * H;
  float *g = alloc(H * gates * u);
  for (int64_t i = 0; i < H; ++i)
    for (int q = 0; q < gates; ++q)
      std::memcpy(g + i * gates * u + q * u, w + i * G + q * H + lo, u * sizeof(float));
  Packed *p = new Packed(g, H, gates * u, gates * u, 1);
  std::free(g);
  return p;
}

ffi::Error check(bool ok, const char *what) {
  return ok ? ffi::Error::Success() : ffi::Error(ffi::ErrorCode::kInvalidArgument, what);
}

// --- LSTM ------------------------------------------------------------------------------------

ffi::Error LstmForward(ffi::ThreadPool xla_pool,
                       ffi::Buffer<ffi::F32> xp, ffi::Buffer<ffi::F32> w,
                       ffi::Buffer<ffi::F32> bias, ffi::Buffer<ffi::F32> h0,
                       ffi::Buffer<ffi::F32> c0, ffi::Buffer<ffi::F32> mask,
                       ffi::Buffer<ffi::F32> xs, ffi::Buffer<ffi::S32> ids,
                       ffi::ResultBuffer<ffi::F32> hs,
                       ffi::ResultBuffer<ffi::F32> cs, ffi::ResultBuffer<ffi::F32> acts,
                       ffi::ResultBuffer<ffi::F32> xht, ffi::ResultBuffer<ffi::F32> h_out,
                       ffi::ResultBuffer<ffi::F32> c_out) {
  // with token ids [T, B], xp is the table E W_ih [V, 4H] and step t's row r reads its row
  // ids[t, r] (clamped to [0, V), as XLA's gather clamps)
  const bool tokens = ids.element_count() > 0;
  auto d = tokens ? ids.dimensions() : xp.dimensions();
  if (d.size() != (tokens ? 2u : 3u) || (tokens && xp.dimensions().size() != 2))
    return check(false, "lstm forward: xp must be [T, B, 4H] (or [V, 4H] with ids [T, B])");
  const int64_t T = d[0], B = d[1], G = tokens ? xp.dimensions()[1] : d[2], H = G / 4;
  const int64_t V = tokens ? xp.dimensions()[0] : 0;
  if (tokens && V == 0) return check(false, "lstm forward: the table xp [V, 4H] is empty");
  const int32_t *tok = tokens ? ids.typed_data() : nullptr;
  if (auto e = check(w.element_count() == static_cast<size_t>(H * G) &&
                         h0.element_count() == static_cast<size_t>(B * H),
                     "lstm forward: shapes of w / h0 do not match xp");
      e.failure())
    return e;
  const bool save = acts->element_count() > 0, masked = mask.element_count() > 0;
  const int64_t I = T * B > 0 ? static_cast<int64_t>(xs.element_count()) / (T * B) : 0;
  if (auto e = check(!save || xht->element_count() == static_cast<size_t>((I + H) * T * B),
                     "lstm forward: xht must be [I + H, T B] for xs [T, B, I]");
      e.failure())
    return e;
  const float *x = xp.typed_data(), *b = bias.typed_data(), *m = mask.typed_data();
  const float *X_ = xs.typed_data();
  float *H_ = hs->typed_data(), *C_ = save ? cs->typed_data() : nullptr;
  float *A_ = save ? acts->typed_data() : nullptr, *P_ = save ? xht->typed_data() : nullptr;
  float *c = c_out->typed_data();  // the running cell state, in place
  std::memcpy(c, c0.typed_data(), B * H * sizeof(float));
  const int n = T > 0 ? num_threads(B, H, G) : 1;
  Barrier barrier(n);
  parallel(xla_pool, n, [&](int k) {
    int64_t lo, hi;
    block(H, k, n, lo, hi);
    const int64_t u = hi - lo;
    int64_t xlo, xhi;  // the own input features, for xht
    block(I, k, n, xlo, xhi);
    Packed *wp = pack_units(w.typed_data(), H, 4, lo, hi);
    float *z = alloc(B * 4 * u);
    const float *h = h0.typed_data();
    for (int64_t t = 0; t < T; ++t) {
      if (u > 0) wp->apply(h, B, z);  // z = h_{t-1} W_hh[:, own units]
      if (save) {  // xht[:, t B + r] = (x_t, h_{t-1})[r]
        store_transposed(P_ + t * B, T * B, X_ + t * B * I, I, B, xlo, xhi);
        store_transposed(P_ + I * T * B + t * B, T * B, h, H, B, lo, hi);
      }
      float *hn = H_ + t * B * H;
      for (int64_t r = 0; r < B && u > 0; ++r) {
        const int64_t xrow = tokens ? std::min<int64_t>(std::max(tok[t * B + r], 0), V - 1)
                                    : t * B + r;
        const float *xr = x + xrow * G + lo, *hp = h + r * H + lo, *br = b + lo;
        float *zr = z + r * 4 * u, *cr = c + r * H + lo, *hr = hn + r * H + lo;
        float *ar = save ? A_ + (t * B + r) * G + lo : nullptr;
        const float keep = masked ? m[t * B + r] : 1.0f;
        if (keep > 0.0f) {
#pragma omp simd
          for (int64_t j = 0; j < u; ++j) {
            float i_ = sigmoid_f(zr[j] + xr[j] + br[j]);
            float f_ = sigmoid_f(zr[u + j] + xr[H + j] + br[H + j]);
            float g_ = tanh_f(zr[2 * u + j] + xr[2 * H + j] + br[2 * H + j]);
            float o_ = sigmoid_f(zr[3 * u + j] + xr[3 * H + j] + br[3 * H + j]);
            float cn = f_ * cr[j] + i_ * g_;
            cr[j] = cn;
            hr[j] = o_ * tanh_f(cn);
            zr[j] = i_;
            zr[u + j] = f_;
            zr[2 * u + j] = g_;
            zr[3 * u + j] = o_;
          }
          if (save)
            for (int q = 0; q < 4; ++q) stream_copy(ar + q * H, zr + q * u, u);
        } else {  // masked: carry kept; the gates are never read by the backward
          std::memcpy(hr, hp, u * sizeof(float));
          if (save)
            for (int q = 0; q < 4; ++q) std::fill(ar + q * H, ar + q * H + u, 0.0f);
        }
        if (save) stream_copy(C_ + (t * B + r) * H + lo, cr, u);
      }
      barrier.wait();  // h_t complete
      h = hn;
    }
    _mm_sfence();  // the streamed stores are visible before the call returns
    std::free(z);
    delete wp;
  });
  std::memcpy(h_out->typed_data(), T > 0 ? H_ + (T - 1) * B * H : h0.typed_data(),
              B * H * sizeof(float));
  return ffi::Error::Success();
}

ffi::Error LstmBackward(ffi::ThreadPool xla_pool,
                        ffi::Buffer<ffi::F32> acts, ffi::Buffer<ffi::F32> cs,
                        ffi::Buffer<ffi::F32> hs, ffi::Buffer<ffi::F32> d_hs,
                        ffi::Buffer<ffi::F32> w, ffi::Buffer<ffi::F32> h0,
                        ffi::Buffer<ffi::F32> c0, ffi::Buffer<ffi::F32> dh_t,
                        ffi::Buffer<ffi::F32> dc_t, ffi::Buffer<ffi::F32> mask,
                        ffi::Buffer<ffi::S32> ids,
                        ffi::ResultBuffer<ffi::F32> dz_out, ffi::ResultBuffer<ffi::F32> dh0_out,
                        ffi::ResultBuffer<ffi::F32> dc0_out, ffi::ResultBuffer<ffi::F32> db_out,
                        ffi::ResultBuffer<ffi::F32> dtab_out) {
  auto d = acts.dimensions();
  if (d.size() != 3) return check(false, "lstm backward: acts must be [T, B, 4H]");
  const int64_t T = d[0], B = d[1], G = d[2], H = G / 4;
  // with token ids: dtab [V, 4H] = sum of dZ's rows per token (the table's gradient), added
  // while each row is in cache; each thread adds into its own units' columns
  const bool tokens = ids.element_count() > 0;
  const int64_t V = tokens ? static_cast<int64_t>(dtab_out->element_count()) / G : 0;
  if (auto e = check(!tokens || (ids.element_count() == static_cast<size_t>(T * B) && V > 0),
                     "lstm backward: ids must be [T, B] and dtab [V, 4H]");
      e.failure())
    return e;
  const int32_t *tok = tokens ? ids.typed_data() : nullptr;
  float *dT = tokens ? dtab_out->typed_data() : nullptr;
  if (tokens) std::memset(dT, 0, V * G * sizeof(float));
  const bool masked = mask.element_count() > 0;
  const float *A_ = acts.typed_data(), *C_ = cs.typed_data(), *m = mask.typed_data();
  const float *dY = d_hs.typed_data();
  float *dZ = dz_out->typed_data();
  float *dh = dh0_out->typed_data(), *dc = dc0_out->typed_data();
  std::memcpy(dh, dh_t.typed_data(), B * H * sizeof(float));
  std::memcpy(dc, dc_t.typed_data(), B * H * sizeof(float));
  const int n = num_threads(B, H, G);
  Barrier barrier(n);
  parallel(xla_pool, n, [&](int k) {
    int64_t lo, hi;
    block(H, k, n, lo, hi);
    const int64_t u = hi - lo;
    // W_hh^T[:, own units] = (rows lo..hi of W_hh)^T: [G, u]
    Packed wt(w.typed_data() + lo * G, G, u, 1, G);
    float *dhp = alloc(B * std::max<int64_t>(u, 1));
    GateSums sums(4, u);
    double *a0 = sums.gate(0), *a1 = sums.gate(1), *a2 = sums.gate(2), *a3 = sums.gate(3);
    for (int64_t t = T - 1; t >= 0; --t) {
      for (int64_t r = 0; r < B && u > 0; ++r) {
        const int64_t row = t * B + r;
        const float *ar = A_ + row * G + lo, *ctr = C_ + row * H + lo, *dyr = dY + row * H + lo;
        const float *cpr = (t > 0 ? C_ + (row - B) * H : c0.typed_data() + r * H) + lo;
        float *dzr = dZ + row * G + lo, *dhr = dh + r * H + lo, *dcr = dc + r * H + lo;
        const float keep = masked ? m[row] : 1.0f;
        // one real step's gradients for the own units; with token ids (kTokens) dZ's row is
        // also added into the token's row of the table's gradient, sr
        auto step = [&](auto kTokens, float *sr) {
#pragma omp simd
          for (int64_t j = 0; j < u; ++j) {
            float i_ = ar[j], f_ = ar[H + j], g_ = ar[2 * H + j], o_ = ar[3 * H + j];
            float tc = tanh_f(ctr[j]);
            float dhj = dhr[j] + dyr[j];
            float dct = dcr[j] + dhj * o_ * (1.0f - tc * tc);
            const float di = dct * g_ * i_ * (1.0f - i_), df = dct * cpr[j] * f_ * (1.0f - f_);
            const float dg = dct * i_ * (1.0f - g_ * g_), dox = dhj * tc * o_ * (1.0f - o_);
            dzr[j] = di;
            dzr[H + j] = df;
            dzr[2 * H + j] = dg;
            dzr[3 * H + j] = dox;
            if constexpr (decltype(kTokens)::value) {
              sr[j] += di;
              sr[H + j] += df;
              sr[2 * H + j] += dg;
              sr[3 * H + j] += dox;
            }
            a0[j] += di;
            a1[j] += df;
            a2[j] += dg;
            a3[j] += dox;
            dcr[j] = dct * f_;
            dhr[j] = dhj;
          }
        };
        if (keep > 0.0f && tokens)
          step(std::true_type{}, dT + std::min<int64_t>(std::max(tok[row], 0), V - 1) * G + lo);
        else if (keep > 0.0f)
          step(std::false_type{}, nullptr);
        else {  // the carry passed through: gradients pass through too
#pragma omp simd
          for (int64_t j = 0; j < u; ++j) dhr[j] += dyr[j];
          for (int q = 0; q < 4; ++q) std::fill(dzr + q * H, dzr + q * H + u, 0.0f);
        }
      }
      barrier.wait();  // dz_t complete
      if (u == 0) continue;
      wt.apply(dZ + t * B * G, B, dhp);  // dh_{t-1}[:, own] = dz_t W_hh^T[:, own]
      for (int64_t r = 0; r < B; ++r) {
        if (masked && !(m[t * B + r] > 0.0f)) continue;  // dh passes unchanged
        std::memcpy(dh + r * H + lo, dhp + r * u, u * sizeof(float));
      }
    }
    std::free(dhp);
    sums.store(db_out->typed_data(), H, lo);
  });
  return ffi::Error::Success();
}

// --- GRU (cuDNN form) ------------------------------------------------------------------------
// u = h W_hh + b_hh;  r = σ(a_r + u_r), z = σ(a_z + u_z), n = tanh(a_n + r u_n)
// h' = (1 - z) n + z h.  Saved per step: acts = (r, z, n, u_n) [T, B, 4H].

ffi::Error GruForward(ffi::ThreadPool xla_pool,
                      ffi::Buffer<ffi::F32> xp, ffi::Buffer<ffi::F32> w,
                      ffi::Buffer<ffi::F32> bias, ffi::Buffer<ffi::F32> h0,
                      ffi::Buffer<ffi::F32> mask, ffi::ResultBuffer<ffi::F32> hs,
                      ffi::ResultBuffer<ffi::F32> acts, ffi::ResultBuffer<ffi::F32> hpt,
                      ffi::ResultBuffer<ffi::F32> h_out) {
  auto d = xp.dimensions();
  if (d.size() != 3) return check(false, "gru forward: xp must be [T, B, 3H]");
  const int64_t T = d[0], B = d[1], G = d[2], H = G / 3;
  if (auto e = check(w.element_count() == static_cast<size_t>(H * G) &&
                         h0.element_count() == static_cast<size_t>(B * H),
                     "gru forward: shapes of w / h0 do not match xp");
      e.failure())
    return e;
  const bool save = acts->element_count() > 0, masked = mask.element_count() > 0;
  const float *x = xp.typed_data(), *b = bias.typed_data(), *m = mask.typed_data();
  float *H_ = hs->typed_data(), *A_ = save ? acts->typed_data() : nullptr;
  float *P_ = save ? hpt->typed_data() : nullptr;
  const int n = T > 0 ? num_threads(B, H, G) : 1;
  Barrier barrier(n);
  parallel(xla_pool, n, [&](int k) {
    int64_t lo, hi;
    block(H, k, n, lo, hi);
    const int64_t u = hi - lo;
    Packed *wp = pack_units(w.typed_data(), H, 3, lo, hi);
    float *uu = alloc(B * 3 * u);
    const float *h = h0.typed_data();
    for (int64_t t = 0; t < T; ++t) {
      if (u > 0) wp->apply(h, B, uu);
      if (save) store_transposed(P_ + t * B, T * B, h, H, B, lo, hi);
      float *hn = H_ + t * B * H;
      for (int64_t r = 0; r < B && u > 0; ++r) {
        const float *xr = x + (t * B + r) * G + lo, *hp = h + r * H + lo, *br = b + lo;
        float *ur = uu + r * 3 * u, *hr = hn + r * H + lo;
        float *ar = save ? A_ + (t * B + r) * 4 * H + lo : nullptr;
        const float keep = masked ? m[t * B + r] : 1.0f;
        if (keep > 0.0f) {
          if (save) {
#pragma omp simd
            for (int64_t j = 0; j < u; ++j) {
              float r_ = sigmoid_f(xr[j] + ur[j] + br[j]);
              float z_ = sigmoid_f(xr[H + j] + ur[u + j] + br[H + j]);
              float un = ur[2 * u + j] + br[2 * H + j];
              float n_ = tanh_f(xr[2 * H + j] + r_ * un);
              hr[j] = (1.0f - z_) * n_ + z_ * hp[j];
              ar[j] = r_;
              ar[H + j] = z_;
              ar[2 * H + j] = n_;
              ar[3 * H + j] = un;
            }
          } else {
#pragma omp simd
            for (int64_t j = 0; j < u; ++j) {
              float r_ = sigmoid_f(xr[j] + ur[j] + br[j]);
              float z_ = sigmoid_f(xr[H + j] + ur[u + j] + br[H + j]);
              float n_ = tanh_f(xr[2 * H + j] + r_ * (ur[2 * u + j] + br[2 * H + j]));
              hr[j] = (1.0f - z_) * n_ + z_ * hp[j];
            }
          }
        } else {
          std::memcpy(hr, hp, u * sizeof(float));
          if (save)
            for (int q = 0; q < 4; ++q) std::fill(ar + q * H, ar + q * H + u, 0.0f);
        }
      }
      barrier.wait();  // h_t complete
      h = hn;
    }
    _mm_sfence();  // the streamed stores are visible before the call returns
    std::free(uu);
    delete wp;
  });
  std::memcpy(h_out->typed_data(), T > 0 ? H_ + (T - 1) * B * H : h0.typed_data(),
              B * H * sizeof(float));
  return ffi::Error::Success();
}

ffi::Error GruBackward(ffi::ThreadPool xla_pool,
                       ffi::Buffer<ffi::F32> acts, ffi::Buffer<ffi::F32> hs,
                       ffi::Buffer<ffi::F32> d_hs, ffi::Buffer<ffi::F32> w,
                       ffi::Buffer<ffi::F32> h0, ffi::Buffer<ffi::F32> dh_t,
                       ffi::Buffer<ffi::F32> mask, ffi::ResultBuffer<ffi::F32> dxp_out,
                       ffi::ResultBuffer<ffi::F32> du_out, ffi::ResultBuffer<ffi::F32> dh0_out,
                       ffi::ResultBuffer<ffi::F32> db_out) {
  auto d = acts.dimensions();
  if (d.size() != 3) return check(false, "gru backward: acts must be [T, B, 4H]");
  const int64_t T = d[0], B = d[1], H = d[2] / 4, G = 3 * H;
  const bool masked = mask.element_count() > 0;
  const float *A_ = acts.typed_data(), *Hs = hs.typed_data(), *m = mask.typed_data();
  const float *dY = d_hs.typed_data();
  float *dX = dxp_out->typed_data(), *dU = du_out->typed_data();
  float *dh = dh0_out->typed_data();
  std::memcpy(dh, dh_t.typed_data(), B * H * sizeof(float));
  const int n = num_threads(B, H, G);
  Barrier barrier(n);
  parallel(xla_pool, n, [&](int k) {
    int64_t lo, hi;
    block(H, k, n, lo, hi);
    const int64_t u = hi - lo;
    Packed wt(w.typed_data() + lo * G, G, u, 1, G);
    float *dhp = alloc(B * std::max<int64_t>(u, 1));
    GateSums sums(3, u);  // db_hh = sum du
    double *a0 = sums.gate(0), *a1 = sums.gate(1), *a2 = sums.gate(2);
    for (int64_t t = T - 1; t >= 0; --t) {
      for (int64_t r = 0; r < B && u > 0; ++r) {
        const int64_t row = t * B + r;
        const float *ar = A_ + row * 4 * H + lo, *dyr = dY + row * H + lo;
        const float *hpr = (t > 0 ? Hs + (row - B) * H : h0.typed_data() + r * H) + lo;
        float *dxr = dX + row * G + lo, *dur = dU + row * G + lo, *dhr = dh + r * H + lo;
        const float keep = masked ? m[row] : 1.0f;
        if (keep > 0.0f) {
#pragma omp simd
          for (int64_t j = 0; j < u; ++j) {
            float r_ = ar[j], z_ = ar[H + j], n_ = ar[2 * H + j], un = ar[3 * H + j];
            float dhj = dhr[j] + dyr[j];
            float dan = dhj * (1.0f - z_) * (1.0f - n_ * n_);
            float dar = dan * un * r_ * (1.0f - r_);
            float daz = dhj * (hpr[j] - n_) * z_ * (1.0f - z_);
            dxr[j] = dar;
            dxr[H + j] = daz;
            dxr[2 * H + j] = dan;
            dur[j] = dar;
            dur[H + j] = daz;
            dur[2 * H + j] = dan * r_;
            a0[j] += dar;
            a1[j] += daz;
            a2[j] += dan * r_;
            dhr[j] = dhj * z_;  // the direct path; the matmul's part is added below
          }
        } else {
#pragma omp simd
          for (int64_t j = 0; j < u; ++j) dhr[j] += dyr[j];
          for (int q = 0; q < 3; ++q) {
            std::fill(dxr + q * H, dxr + q * H + u, 0.0f);
            std::fill(dur + q * H, dur + q * H + u, 0.0f);
          }
        }
      }
      barrier.wait();  // du_t complete
      if (u == 0) continue;
      wt.apply(dU + t * B * G, B, dhp);  // du_t W_hh^T[:, own]
      for (int64_t r = 0; r < B; ++r) {
        if (masked && !(m[t * B + r] > 0.0f)) continue;
        float *dhr = dh + r * H + lo;
        const float *pr = dhp + r * u;
#pragma omp simd
        for (int64_t j = 0; j < u; ++j) dhr[j] += pr[j];
      }
    }
    std::free(dhp);
    sums.store(db_out->typed_data(), H, lo);
  });
  return ffi::Error::Success();
}

}  // namespace

using F32 = ffi::Buffer<ffi::F32>;
using R32 = ffi::ResultBuffer<ffi::F32>;

XLA_FFI_DEFINE_HANDLER_SYMBOL(RnnlabLstmForward, LstmForward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>()
                                  .Arg<F32>().Arg<F32>().Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<F32>().Ret<F32>().Ret<F32>().Ret<F32>().Ret<F32>()
                                  .Ret<F32>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(RnnlabLstmBackward, LstmBackward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>()
                                  .Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<F32>().Ret<F32>().Ret<F32>().Ret<F32>().Ret<F32>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(RnnlabGruForward, GruForward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>()
                                  .Ret<F32>().Ret<F32>().Ret<F32>().Ret<F32>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(RnnlabGruBackward, GruBackward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>()
                                  .Arg<F32>().Arg<F32>()
                                  .Ret<F32>().Ret<F32>().Ret<F32>().Ret<F32>());
