// Fused CPU recurrences (LSTM, cuDNN-form GRU) as XLA FFI custom calls: forward and backward
// over all time steps in one call each. Compiled on first use by rnnlab/fused/cpu.py (g++ -O3
// -march=native) and linked against MKL (sequential), whose packed-weights GEMM
// (cblas_sgemm_pack / cblas_sgemm_compute) lets W_hh be packed once per call and reused at
// every step. The gate arithmetic runs in the same time loop, over contiguous rows, written so
// that the compiler vectorises it (branch-free exp / tanh below). Layouts (row-major, float32):
//
//   xp [T, B, G] input half of the gates (time-major, already in the order of the recurrence;
//                 LSTM: x W_ih without bias, G = 4H, gates i f g o;
//                 GRU:  x W_ih + b_ih,        G = 3H, gates r z n)
//   w  [H, G]    W_hh;  b [G] (LSTM: b; GRU: b_hh);  h0, c0 [B, H];  mask [T, B] or empty
//   hs [T, B, H] the carry h after every step (before masking of the outputs)
//
// A masked step (mask 0) keeps the carry. Backward: per step one [B, G] x [G, H] packed GEMM
// against W_hh^T; dW_hh = h_prev^T dZ and db are one large GEMM / a sum after the loop.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

// --- the few MKL entry points used (declared here so that no MKL headers are needed) --------
extern "C" {
enum CBLAS_LAYOUT { CblasRowMajor = 101, CblasColMajor = 102 };
enum CBLAS_TRANSPOSE { CblasNoTrans = 111, CblasTrans = 112, CblasConjTrans = 113 };
enum CBLAS_STORAGE { CblasPacked = 151 };
enum CBLAS_IDENTIFIER { CblasAMatrix = 161, CblasBMatrix = 162 };
void cblas_sgemm(const CBLAS_LAYOUT, const CBLAS_TRANSPOSE, const CBLAS_TRANSPOSE, const int,
                 const int, const int, const float, const float *, const int, const float *,
                 const int, const float, float *, const int);
size_t cblas_sgemm_pack_get_size(const CBLAS_IDENTIFIER, const int, const int, const int);
void cblas_sgemm_pack(const CBLAS_LAYOUT, const CBLAS_IDENTIFIER, const CBLAS_TRANSPOSE,
                      const int, const int, const int, const float, const float *, const int,
                      float *);
void cblas_sgemm_compute(const CBLAS_LAYOUT, const int, const int, const int, const int,
                         const int, const float *, const int, const float *, const int,
                         const float, float *, const int);
}

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

// W [K, N] (row-major) packed as the B operand of C[M, N] = A[M, K] op(W); trans: W is [N, K]
// and used transposed. Freed at the end of the scope.
struct Packed {
  float *p = nullptr;
  int m, n, k;
  Packed(const float *w, int m_, int n_, int k_, bool trans) : m(m_), n(n_), k(k_) {
    size_t bytes = cblas_sgemm_pack_get_size(CblasBMatrix, m, n, k);
    p = static_cast<float *>(std::aligned_alloc(64, (bytes + 63) / 64 * 64));
    cblas_sgemm_pack(CblasRowMajor, CblasBMatrix, trans ? CblasTrans : CblasNoTrans, m, n, k,
                     1.0f, w, trans ? k : n, p);
  }
  ~Packed() { std::free(p); }
  // c[m, n] = a[m, k] W
  void apply(const float *a, float *c) const {
    cblas_sgemm_compute(CblasRowMajor, CblasNoTrans, CblasPacked, m, n, k, a, k, p, n, 0.0f, c,
                        n);
  }
};

// dw[H, G] = h_prev^T dz, h_prev = [h0; hs[:-1]] ([T*B, H]); db[G] = sum of dz rows
void weight_grads(const float *h0, const float *hs, const float *dz, int64_t T, int64_t B,
                  int64_t H, int64_t G, float *dw, float *db) {
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, H, G, B, 1.0f, h0, H, dz, G, 0.0f, dw, G);
  if (T > 1)
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, H, G, (T - 1) * B, 1.0f, hs, H,
                dz + B * G, G, 1.0f, dw, G);
  std::fill(db, db + G, 0.0f);
  for (int64_t r = 0; r < T * B; ++r) {
    const float *row = dz + r * G;
#pragma omp simd
    for (int64_t j = 0; j < G; ++j) db[j] += row[j];
  }
}

ffi::Error check(bool ok, const char *what) {
  return ok ? ffi::Error::Success() : ffi::Error(ffi::ErrorCode::kInvalidArgument, what);
}

// --- LSTM ------------------------------------------------------------------------------------

ffi::Error LstmForward(ffi::Buffer<ffi::F32> xp, ffi::Buffer<ffi::F32> w,
                       ffi::Buffer<ffi::F32> bias, ffi::Buffer<ffi::F32> h0,
                       ffi::Buffer<ffi::F32> c0, ffi::Buffer<ffi::F32> mask,
                       ffi::ResultBuffer<ffi::F32> hs, ffi::ResultBuffer<ffi::F32> cs,
                       ffi::ResultBuffer<ffi::F32> acts, ffi::ResultBuffer<ffi::F32> h_out,
                       ffi::ResultBuffer<ffi::F32> c_out) {
  auto d = xp.dimensions();
  if (d.size() != 3) return check(false, "lstm forward: xp must be [T, B, 4H]");
  const int64_t T = d[0], B = d[1], G = d[2], H = G / 4;
  if (auto e = check(w.element_count() == static_cast<size_t>(H * G) &&
                         h0.element_count() == static_cast<size_t>(B * H),
                     "lstm forward: shapes of w / h0 do not match xp");
      e.failure())
    return e;
  const bool save = acts->element_count() > 0, masked = mask.element_count() > 0;
  const float *x = xp.typed_data(), *b = bias.typed_data(), *m = mask.typed_data();
  float *H_ = hs->typed_data(), *C_ = save ? cs->typed_data() : nullptr;
  float *A_ = save ? acts->typed_data() : nullptr;
  Packed wp(w.typed_data(), B, G, H, false);
  float *z = static_cast<float *>(std::aligned_alloc(64, ((B * G * 4 + 63) / 64) * 64));
  float *c = static_cast<float *>(std::aligned_alloc(64, ((B * H * 4 + 63) / 64) * 64));
  std::memcpy(c, c0.typed_data(), B * H * sizeof(float));
  const float *h = h0.typed_data();
  for (int64_t t = 0; t < T; ++t) {
    wp.apply(h, z);  // z = h_{t-1} W_hh
    float *hn = H_ + t * B * H;
    for (int64_t r = 0; r < B; ++r) {
      const float *xr = x + (t * B + r) * G;
      float *zr = z + r * G, *cr = c + r * H, *hr = hn + r * H;
      const float *hp = h + r * H;
      float *ar = save ? A_ + (t * B + r) * G : zr;
      const float keep = masked ? m[t * B + r] : 1.0f;
      if (keep > 0.0f) {
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) {
          float i_ = sigmoid_f(zr[j] + xr[j] + b[j]);
          float f_ = sigmoid_f(zr[H + j] + xr[H + j] + b[H + j]);
          float g_ = tanh_f(zr[2 * H + j] + xr[2 * H + j] + b[2 * H + j]);
          float o_ = sigmoid_f(zr[3 * H + j] + xr[3 * H + j] + b[3 * H + j]);
          float cn = f_ * cr[j] + i_ * g_;
          cr[j] = cn;
          hr[j] = o_ * tanh_f(cn);
          ar[j] = i_;
          ar[H + j] = f_;
          ar[2 * H + j] = g_;
          ar[3 * H + j] = o_;
        }
      } else {  // masked: carry kept; the gates are never read by the backward
        std::memcpy(hr, hp, H * sizeof(float));
        if (save) std::fill(ar, ar + G, 0.0f);
      }
      if (save) std::memcpy(C_ + (t * B + r) * H, cr, H * sizeof(float));
    }
    h = hn;
  }
  std::memcpy(h_out->typed_data(), h, B * H * sizeof(float));
  std::memcpy(c_out->typed_data(), c, B * H * sizeof(float));
  std::free(z);
  std::free(c);
  return ffi::Error::Success();
}

ffi::Error LstmBackward(ffi::Buffer<ffi::F32> acts, ffi::Buffer<ffi::F32> cs,
                        ffi::Buffer<ffi::F32> hs, ffi::Buffer<ffi::F32> d_hs,
                        ffi::Buffer<ffi::F32> w, ffi::Buffer<ffi::F32> h0,
                        ffi::Buffer<ffi::F32> c0, ffi::Buffer<ffi::F32> dh_t,
                        ffi::Buffer<ffi::F32> dc_t, ffi::Buffer<ffi::F32> mask,
                        ffi::ResultBuffer<ffi::F32> dz_out, ffi::ResultBuffer<ffi::F32> dw_out,
                        ffi::ResultBuffer<ffi::F32> db_out, ffi::ResultBuffer<ffi::F32> dh0_out,
                        ffi::ResultBuffer<ffi::F32> dc0_out) {
  auto d = acts.dimensions();
  if (d.size() != 3) return check(false, "lstm backward: acts must be [T, B, 4H]");
  const int64_t T = d[0], B = d[1], G = d[2], H = G / 4;
  const bool masked = mask.element_count() > 0;
  const float *A_ = acts.typed_data(), *C_ = cs.typed_data(), *m = mask.typed_data();
  const float *dY = d_hs.typed_data();
  float *dZ = dz_out->typed_data();
  Packed wt(w.typed_data(), B, H, G, true);  // W_hh^T [G, H]
  float *dh = dh0_out->typed_data(), *dc = dc0_out->typed_data();
  std::memcpy(dh, dh_t.typed_data(), B * H * sizeof(float));
  std::memcpy(dc, dc_t.typed_data(), B * H * sizeof(float));
  float *dhp = static_cast<float *>(std::aligned_alloc(64, ((B * H * 4 + 63) / 64) * 64));
  for (int64_t t = T - 1; t >= 0; --t) {
    for (int64_t r = 0; r < B; ++r) {
      const int64_t row = t * B + r;
      const float *ar = A_ + row * G, *ctr = C_ + row * H, *dyr = dY + row * H;
      const float *cpr = t > 0 ? C_ + (row - B) * H : c0.typed_data() + r * H;
      float *dzr = dZ + row * G, *dhr = dh + r * H, *dcr = dc + r * H;
      const float keep = masked ? m[row] : 1.0f;
      if (keep > 0.0f) {
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) {
          float i_ = ar[j], f_ = ar[H + j], g_ = ar[2 * H + j], o_ = ar[3 * H + j];
          float tc = tanh_f(ctr[j]);
          float dhj = dhr[j] + dyr[j];
          float dct = dcr[j] + dhj * o_ * (1.0f - tc * tc);
          dzr[j] = dct * g_ * i_ * (1.0f - i_);
          dzr[H + j] = dct * cpr[j] * f_ * (1.0f - f_);
          dzr[2 * H + j] = dct * i_ * (1.0f - g_ * g_);
          dzr[3 * H + j] = dhj * tc * o_ * (1.0f - o_);
          dcr[j] = dct * f_;
          dhr[j] = dhj;
        }
      } else {  // the carry passed through: gradients pass through too
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) dhr[j] += dyr[j];
        std::fill(dzr, dzr + G, 0.0f);
      }
    }
    wt.apply(dZ + t * B * G, dhp);  // dh_{t-1} = dz_t W_hh^T
    for (int64_t r = 0; r < B; ++r) {
      if (masked && !(m[t * B + r] > 0.0f)) continue;  // dh passes unchanged
      std::memcpy(dh + r * H, dhp + r * H, H * sizeof(float));
    }
  }
  std::free(dhp);
  weight_grads(h0.typed_data(), hs.typed_data(), dZ, T, B, H, G, dw_out->typed_data(),
               db_out->typed_data());
  return ffi::Error::Success();
}

// --- GRU (cuDNN form) ------------------------------------------------------------------------
// u = h W_hh + b_hh;  r = σ(a_r + u_r), z = σ(a_z + u_z), n = tanh(a_n + r u_n)
// h' = (1 - z) n + z h.  Saved per step: acts = (r, z, n, u_n) [T, B, 4H].

ffi::Error GruForward(ffi::Buffer<ffi::F32> xp, ffi::Buffer<ffi::F32> w,
                      ffi::Buffer<ffi::F32> bias, ffi::Buffer<ffi::F32> h0,
                      ffi::Buffer<ffi::F32> mask, ffi::ResultBuffer<ffi::F32> hs,
                      ffi::ResultBuffer<ffi::F32> acts, ffi::ResultBuffer<ffi::F32> h_out) {
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
  Packed wp(w.typed_data(), B, G, H, false);
  float *u = static_cast<float *>(std::aligned_alloc(64, ((B * G * 4 + 63) / 64) * 64));
  float *tmp = static_cast<float *>(std::aligned_alloc(64, ((H * 16 + 63) / 64) * 64));
  const float *h = h0.typed_data();
  for (int64_t t = 0; t < T; ++t) {
    wp.apply(h, u);
    float *hn = H_ + t * B * H;
    for (int64_t r = 0; r < B; ++r) {
      const float *xr = x + (t * B + r) * G, *hp = h + r * H;
      float *ur = u + r * G, *hr = hn + r * H;
      float *ar = save ? A_ + (t * B + r) * 4 * H : tmp;
      const float keep = masked ? m[t * B + r] : 1.0f;
      if (keep > 0.0f) {
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) {
          float r_ = sigmoid_f(xr[j] + ur[j] + b[j]);
          float z_ = sigmoid_f(xr[H + j] + ur[H + j] + b[H + j]);
          float un = ur[2 * H + j] + b[2 * H + j];
          float n_ = tanh_f(xr[2 * H + j] + r_ * un);
          hr[j] = (1.0f - z_) * n_ + z_ * hp[j];
          ar[j] = r_;
          ar[H + j] = z_;
          ar[2 * H + j] = n_;
          ar[3 * H + j] = un;
        }
      } else {
        std::memcpy(hr, hp, H * sizeof(float));
        if (save) std::fill(ar, ar + 4 * H, 0.0f);
      }
    }
    h = hn;
  }
  std::memcpy(h_out->typed_data(), h, B * H * sizeof(float));
  std::free(u);
  std::free(tmp);
  return ffi::Error::Success();
}

ffi::Error GruBackward(ffi::Buffer<ffi::F32> acts, ffi::Buffer<ffi::F32> hs,
                       ffi::Buffer<ffi::F32> d_hs, ffi::Buffer<ffi::F32> w,
                       ffi::Buffer<ffi::F32> h0, ffi::Buffer<ffi::F32> dh_t,
                       ffi::Buffer<ffi::F32> mask, ffi::ResultBuffer<ffi::F32> dxp_out,
                       ffi::ResultBuffer<ffi::F32> du_out, ffi::ResultBuffer<ffi::F32> dw_out,
                       ffi::ResultBuffer<ffi::F32> db_out, ffi::ResultBuffer<ffi::F32> dh0_out) {
  auto d = acts.dimensions();
  if (d.size() != 3) return check(false, "gru backward: acts must be [T, B, 4H]");
  const int64_t T = d[0], B = d[1], H = d[2] / 4, G = 3 * H;
  const bool masked = mask.element_count() > 0;
  const float *A_ = acts.typed_data(), *Hs = hs.typed_data(), *m = mask.typed_data();
  const float *dY = d_hs.typed_data();
  float *dX = dxp_out->typed_data(), *dU = du_out->typed_data();
  Packed wt(w.typed_data(), B, H, G, true);  // W_hh^T [G, H]
  float *dh = dh0_out->typed_data();
  std::memcpy(dh, dh_t.typed_data(), B * H * sizeof(float));
  float *dhp = static_cast<float *>(std::aligned_alloc(64, ((B * H * 4 + 63) / 64) * 64));
  for (int64_t t = T - 1; t >= 0; --t) {
    for (int64_t r = 0; r < B; ++r) {
      const int64_t row = t * B + r;
      const float *ar = A_ + row * 4 * H, *dyr = dY + row * H;
      const float *hpr = t > 0 ? Hs + (row - B) * H : h0.typed_data() + r * H;
      float *dxr = dX + row * G, *dur = dU + row * G, *dhr = dh + r * H;
      const float keep = masked ? m[row] : 1.0f;
      if (keep > 0.0f) {
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) {
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
          dhr[j] = dhj * z_;  // the direct path; the matmul's part is added below
        }
      } else {
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) dhr[j] += dyr[j];
        std::fill(dxr, dxr + G, 0.0f);
        std::fill(dur, dur + G, 0.0f);
      }
    }
    wt.apply(dU + t * B * G, dhp);  // du_t W_hh^T
    for (int64_t r = 0; r < B; ++r) {
      if (masked && !(m[t * B + r] > 0.0f)) continue;
      float *dhr = dh + r * H;
      const float *pr = dhp + r * H;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) dhr[j] += pr[j];
    }
  }
  std::free(dhp);
  weight_grads(h0.typed_data(), Hs, dU, T, B, H, G, dw_out->typed_data(), db_out->typed_data());
  return ffi::Error::Success();
}

}  // namespace

using F32 = ffi::Buffer<ffi::F32>;
using R32 = ffi::ResultBuffer<ffi::F32>;

XLA_FFI_DEFINE_HANDLER_SYMBOL(RnnlabLstmForward, LstmForward,
                              ffi::Ffi::Bind()
                                  .Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>()
                                  .Arg<F32>()
                                  .Ret<F32>().Ret<F32>().Ret<F32>().Ret<F32>().Ret<F32>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(RnnlabLstmBackward, LstmBackward,
                              ffi::Ffi::Bind()
                                  .Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>()
                                  .Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>()
                                  .Ret<F32>().Ret<F32>().Ret<F32>().Ret<F32>().Ret<F32>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(RnnlabGruForward, GruForward,
                              ffi::Ffi::Bind()
                                  .Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>()
                                  .Ret<F32>().Ret<F32>().Ret<F32>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(RnnlabGruBackward, GruBackward,
                              ffi::Ffi::Bind()
                                  .Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>()
                                  .Arg<F32>().Arg<F32>()
                                  .Ret<F32>().Ret<F32>().Ret<F32>().Ret<F32>().Ret<F32>());
