// voip_codec's own CPU kernels for batch-1 streaming steps (built and loaded by kernels.py):
// the int8 product (vc_linear), the fp16-weight product (vc_half_linear), depthwise and grouped
// convolutions (vc_depthwise, vc_grouped), the three-product bf16 convolution
// (vc_bf16x3_windows) and the 4-bit product (vc_q4_linear). Each has its own comment below;
// this one is the int8 product's.
//
// y = dequant(quant(x) @ W^T) + bias for fp32 x (rows, K), int8 W (N, K) with one fp32 scale per
// output column, in one call: the activations are quantised here (per tensor, uint8), the
// products accumulate in int32, and the output is scaled back to fp32. Two activation rules:
//
// * split (the token path): step d = max|x| / 127; coarse rows round(x / d) and remainder rows
//   round((x / d - coarse) * 254), both about zero point 128; output = coarse + remainder / 254.
//   Bit-equal to the oneDNN split path of precision.py (same roundings, same float order).
// * plain (the decoder side): fbgemm's dynamic rule, range [min(x, 0), max(x, 0)] over 255 steps
//   with a nudged integer zero point.
//
// At batch 1 the product reads each weight once per call and does little arithmetic on it, so
// the time is the weight read. The weights are packed so that each thread streams one contiguous
// range: blocks of 16 output columns, inside a block K/4 groups of 16 columns x 4 bytes
// (64 bytes, one AVX-512 register or one row of an AMX tile), K padded to 64. Software prefetch
// runs ahead of the stream: the hardware prefetcher alone left a 2-core guest at 7 GB/s.
//
// Two instruction sets: AMX (TDPBUSD, 16 rows x 16 columns x 64 per instruction) and AVX-512
// VNNI (VPDPBUSD). Threads: OpenMP, the same libgomp that torch loaded (linked by soname), with
// the thread count passed by the caller (torch.get_num_threads()).
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <vector>

namespace {

constexpr int kBlock = 16;       // output columns per block
constexpr int kDepth = 64;       // K per AMX tile row (bytes)
constexpr int kAmxPrefetch = 8192;
constexpr int kVnniPrefetch = 2048;
constexpr float kSplitGain = 254.0f;  // the split rule's remainder factor, 2 * 127

struct TileConfig {
  uint8_t palette;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

inline int64_t ceil_div(int64_t a, int64_t m) { return (a + m - 1) / m; }
inline int64_t round_up(int64_t a, int64_t m) { return ceil_div(a, m) * m; }

// The blocks [b0, b1) of `blocks` that this OpenMP thread takes (contiguous, so each thread
// streams one range of packed weights).
inline void thread_blocks(int64_t blocks, int64_t* b0, int64_t* b1) {
  const int nt = omp_get_num_threads(), id = omp_get_thread_num();
  const int64_t per = (blocks + nt - 1) / nt;
  *b0 = id * per < blocks ? id * per : blocks;
  *b1 = *b0 + per < blocks ? *b0 + per : blocks;
}

// This thread's AMX tile configuration: tile t has rows[t] rows of 64 bytes (0: unused).
void configure_tiles(const int (&rows)[8]) {
  TileConfig cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.palette = 1;
  for (int t = 0; t < 8; ++t) {
    cfg.rows[t] = (uint8_t)rows[t];
    cfg.colsb[t] = rows[t] ? 64 : 0;
  }
  _tile_loadconfig(&cfg);
}

inline uint16_t to_half(float v) {
  return (uint16_t)_mm_extract_epi16(_mm_cvtps_ph(_mm_set_ss(v), _MM_FROUND_TO_NEAREST_INT), 0);
}

// exp(x) for 16 floats: x = n ln2 + r (|r| <= ln2 / 2, ln2 in two parts), e^r by its Taylor
// polynomial to degree 7 (relative error below 3e-9 before rounding), times 2^n.
inline __m512 exp16(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.42860682030941723e-6f), r);
  __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

// The exact (erf) GELU of 16 floats, 0.5 x (1 + erf(x / sqrt 2)), with erf from Abramowitz and
// Stegun 7.1.26 (absolute error at most 1.5e-7): about 1e-7 |x| from torch's GELU. The
// epilogues of the products and the depthwise convolution apply it in place of a separate
// operator call (at batch 1 a GELU call costs 25-40 us in a streaming step, its arithmetic
// about 1 us).
inline __m512 gelu16(__m512 x) {
  const __m512 z = _mm512_mul_ps(x, _mm512_set1_ps(0.70710678118654752f));
  const __m512 a = _mm512_abs_ps(z);
  const __m512 t = _mm512_div_ps(_mm512_set1_ps(1.0f),
                                 _mm512_fmadd_ps(a, _mm512_set1_ps(0.3275911f), _mm512_set1_ps(1.0f)));
  __m512 p = _mm512_set1_ps(1.061405429f);
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-1.453152027f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.421413741f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.284496736f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.254829592f));
  p = _mm512_mul_ps(p, t);
  const __m512 e = exp16(_mm512_mul_ps(_mm512_sub_ps(_mm512_setzero_ps(), a), a));
  const __m512 erf_abs = _mm512_fnmadd_ps(p, e, _mm512_set1_ps(1.0f));
  // erf is odd: the sign of z
  const __mmask16 neg = _mm512_cmp_ps_mask(z, _mm512_setzero_ps(), _CMP_LT_OQ);
  const __m512 erf = _mm512_mask_sub_ps(erf_abs, neg, _mm512_setzero_ps(), erf_abs);
  return _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), x),
                       _mm512_add_ps(_mm512_set1_ps(1.0f), erf));
}

// GELU in place on `width` (<= 16) columns of `rows` rows of out (row stride N).
inline void gelu_block(float* out, int64_t rows, int64_t N, int64_t width) {
  const __mmask16 mask = (__mmask16)(width >= 16 ? 0xFFFF : (1u << width) - 1u);
  for (int64_t r = 0; r < rows; ++r)
    _mm512_mask_storeu_ps(out + r * N, mask, gelu16(_mm512_maskz_loadu_ps(mask, out + r * N)));
}

// The quantisation of one call's activations (the rows themselves are written to q).
struct Quantised {
  float step;    // activation step
  int32_t zero;  // activation zero point
};

bool finite_range(const float* x, int64_t total, float* lo, float* hi) {
  __m512 vmin = _mm512_set1_ps(INFINITY), vmax = _mm512_set1_ps(-INFINITY);
  __m512 nan = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= total; i += 16) {
    __m512 v = _mm512_loadu_ps(x + i);
    vmin = _mm512_min_ps(vmin, v);
    vmax = _mm512_max_ps(vmax, v);
    nan = _mm512_add_ps(nan, _mm512_mul_ps(_mm512_setzero_ps(), v));  // NaN/inf -> NaN
  }
  float mn = _mm512_reduce_min_ps(vmin), mx = _mm512_reduce_max_ps(vmax);
  float z = _mm512_reduce_add_ps(nan);
  for (; i < total; ++i) {
    mn = fminf(mn, x[i]);
    mx = fmaxf(mx, x[i]);
    z += 0.0f * x[i];
  }
  *lo = mn;
  *hi = mx;
  return z == 0.0f && isfinite(mn) && isfinite(mx);
}

// Split rows: q[0..n) coarse, q[n..2n) remainders (precision.py's _split_levels).
Quantised quantise_split(const float* x, int64_t n, int64_t K, int64_t Kp, float lo, float hi,
                         uint8_t* q) {
  float amax = fmaxf(hi, -lo);
  double step = (double)amax / 127.0;
  if (step == 0.0) step = 1.0;
  const float inv = (float)(1.0 / step);
  for (int64_t r = 0; r < n; ++r) {
    uint8_t* qc = q + r * Kp;
    uint8_t* qf = q + (n + r) * Kp;
    const float* xr = x + r * K;
    for (int64_t k = 0; k < K; ++k) {
      float t = xr[k] * inv;
      float c = nearbyintf(t);
      float f = nearbyintf((t - c) * kSplitGain);
      qc[k] = (uint8_t)(int)(c + 128.0f);
      qf[k] = (uint8_t)(int)(f + 128.0f);
    }
  }
  return {(float)step, 128};
}

// fbgemm's dynamic rule (quant_utils ChooseQuantizationParams, qmin 0, qmax 255, no reduced
// range, no sparsity preservation), then nearbyint(x * (1 / step)) + zero, clamped.
Quantised quantise_plain(const float* x, int64_t n, int64_t K, int64_t Kp, float lo, float hi,
                         uint8_t* q) {
  const float small = 6.1e-5f;
  float mn = fminf(lo, 0.0f), mx = fmaxf(hi, 0.0f);
  double scale = ((double)mx - mn) / 255.0;
  if ((float)scale == 0.0f || isinf(1.0f / (float)scale)) scale = 0.1;
  if (scale < small) {
    float org = (float)scale;
    scale = small;
    if (mn == 0.0f) {
      mx = small * 255.0f;
    } else if (mx == 0.0f) {
      mn = -small * 255.0f;
    } else {
      float amp = small / org;
      mn *= amp;
      mx *= amp;
    }
  }
  double from_min = 0.0 - mn / scale, from_max = 255.0 - mx / scale;
  double err_min = 0.0 - fabs(mn / scale), err_max = 255.0 - fabs(mx / scale);
  double initial = err_min < err_max ? from_min : from_max;
  int32_t zero = initial < 0.0 ? 0 : initial > 255.0 ? 255 : (int32_t)nearbyint(initial);
  const float step = (float)scale, inv = 1.0f / step;
  for (int64_t r = 0; r < n; ++r) {
    uint8_t* qr = q + r * Kp;
    const float* xr = x + r * K;
    for (int64_t k = 0; k < K; ++k) {
      int32_t v = (int32_t)nearbyintf(xr[k] * inv) + zero;
      qr[k] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
    }
  }
  return {step, zero};
}

// One call's activations quantised (split or plain rule) into `rows` rows of Kp bytes (the rows
// past the quantised ones and the bytes past K zero) in a thread-local buffer, or nullptr when x
// holds NaN/inf.
const uint8_t* quantise_call(const float* x, int64_t n, int64_t K, int64_t Kp, int split,
                             int64_t rows, Quantised* qa) {
  float lo, hi;
  if (!finite_range(x, n * K, &lo, &hi)) return nullptr;
  thread_local std::vector<uint8_t> qbuf;
  qbuf.assign((size_t)(rows * Kp), 0);
  uint8_t* q = qbuf.data();
  *qa = split ? quantise_split(x, n, K, Kp, lo, hi, q) : quantise_plain(x, n, K, Kp, lo, hi, q);
  return q;
}

// acc (rows x 16 int32) for one block of columns, AMX: rows in tiles of up to 16.
void block_amx(const uint8_t* q, int64_t rows, int64_t Kp, const int8_t* wb, int32_t* acc) {
  const int64_t depth = Kp / kDepth;
  for (int64_t r0 = 0; r0 < rows; r0 += 16) {
    _tile_zero(0);
    const uint8_t* qr = q + r0 * Kp;
    for (int64_t kb = 0; kb < depth; ++kb) {
      const int8_t* p = wb + kb * 1024;
      for (int l = 0; l < 1024; l += 64) _mm_prefetch((const char*)(p + kAmxPrefetch + l), _MM_HINT_T0);
      _tile_loadd(1, qr + kb * kDepth, Kp);
      _tile_loadd(2, p, 64);
      _tile_dpbusd(0, 1, 2);
    }
    _tile_stored(0, acc + r0 * kBlock, 64);
  }
}

template <int R>
void rows_vnni(const uint8_t* q, int64_t Kp, const int8_t* wb, int32_t* acc) {
  __m512i a[R];
  for (int r = 0; r < R; ++r) a[r] = _mm512_setzero_si512();
  const int64_t groups = Kp / 4;
  for (int64_t g = 0; g < groups; ++g) {
    const int8_t* p = wb + g * 64;
    _mm_prefetch((const char*)(p + kVnniPrefetch), _MM_HINT_T0);
    __m512i w = _mm512_loadu_si512((const void*)p);
    for (int r = 0; r < R; ++r) {
      int32_t v;
      memcpy(&v, q + r * Kp + 4 * g, 4);
      a[r] = _mm512_dpbusd_epi32(a[r], _mm512_set1_epi32(v), w);
    }
  }
  for (int r = 0; r < R; ++r) _mm512_storeu_si512((void*)(acc + r * kBlock), a[r]);
}

using RowsFn = void (*)(const uint8_t*, int64_t, const int8_t*, int32_t*);
const RowsFn kRowsVnni[9] = {nullptr,        rows_vnni<1>, rows_vnni<2>, rows_vnni<3>, rows_vnni<4>,
                             rows_vnni<5>, rows_vnni<6>, rows_vnni<7>, rows_vnni<8>};

void block_vnni(const uint8_t* q, int64_t rows, int64_t Kp, const int8_t* wb, int32_t* acc) {
  for (int64_t r0 = 0; r0 < rows; r0 += 8) {
    int64_t R = rows - r0 < 8 ? rows - r0 : 8;
    kRowsVnni[R](q + r0 * Kp, Kp, wb, acc + r0 * kBlock);
  }
}

}  // namespace

extern "C" {

// 1 when this process may use AMX tiles (asks the kernel once; Linux >= 5.16), else 0.
int vc_amx_permit(void) {
  const long ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18;
  return syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 ? 1 : 0;
}

// Bytes of packed weights for (N, K): blocks of 16 columns, K padded to 64.
int64_t vc_packed_bytes(int64_t N, int64_t K) {
  return round_up(N, kBlock) * round_up(K, kDepth);
}

// Pack int8 weights w (N, K) row-major into `packed` (vc_packed_bytes) and write the column sums.
void vc_pack(const int8_t* w, int64_t N, int64_t K, int8_t* packed, int32_t* colsum) {
  const int64_t Kp = round_up(K, kDepth);
  memset(packed, 0, (size_t)vc_packed_bytes(N, K));
  for (int64_t col = 0; col < N; ++col) {
    int8_t* base = packed + (col / kBlock) * kBlock * Kp + (col % kBlock) * 4;
    int32_t sum = 0;
    for (int64_t k = 0; k < K; ++k) {
      base[(k / 4) * 64 + (k % 4)] = w[col * K + k];
      sum += w[col * K + k];
    }
    colsum[col] = sum;
  }
}

// out (n, N) = the int8 product of x (n, K). Returns 0, or 1 when x holds NaN/inf (out untouched).
int vc_linear(const float* x, int64_t n, int64_t K, int split, const int8_t* packed,
              const int32_t* colsum, const float* wscale, const float* bias, float* out, int64_t N,
              int threads, int amx, int gelu) {
  if (n <= 0) return 0;
  const int64_t Kp = round_up(K, kDepth);
  const int64_t qrows = split ? 2 * n : n;
  // AMX tiles take 16 rows at a time: pad to a multiple of 16 with zero rows
  const int64_t padded = amx ? round_up(qrows, 16) : qrows;
  Quantised qa;
  const uint8_t* q = quantise_call(x, n, K, Kp, split, padded, &qa);
  if (!q) return 1;
  const int64_t blocks = ceil_div(N, kBlock);
  const float alpha = 1.0f / kSplitGain;
#pragma omp parallel num_threads(threads > 0 ? threads : 1)
  {
    int64_t b0, b1;
    thread_blocks(blocks, &b0, &b1);
    std::vector<int32_t> acc((size_t)(padded * kBlock));
    if (amx && b0 < b1) {
      const int tile_rows = padded < 16 ? (int)padded : 16;
      // accumulators, activations, weights
      configure_tiles({tile_rows, tile_rows, 16, 0, 0, 0, 0, 0});
    }
    for (int64_t b = b0; b < b1; ++b) {
      const int8_t* wb = packed + b * kBlock * Kp;
      if (amx) block_amx(q, padded, Kp, wb, acc.data());
      else block_vnni(q, qrows, Kp, wb, acc.data());
      const int64_t c0 = b * kBlock, width = N - c0 < kBlock ? N - c0 : kBlock;
      for (int64_t j = 0; j < width; ++j) {
        const int64_t col = c0 + j;
        const int32_t offset = qa.zero * colsum[col];
        const float s = qa.step * wscale[col];
        for (int64_t r = 0; r < n; ++r) {
          float y = (float)(acc[r * kBlock + j] - offset) * s;
          if (split) {
            float fine = (float)(acc[(n + r) * kBlock + j] - offset) * s;
            y = fmaf(fine, alpha, y);
          }
          if (bias) y += bias[col];
          out[r * N + col] = y;
        }
      }
      if (gelu) gelu_block(out + c0, n, N, width);
    }
    if (amx && b0 < b1) _tile_release();
  }
  return 0;
}

// 4-bit weights (int4 mode's decoder side): y = dequant(quant(x) @ W^T) + bias, W (N, K) as
// signed 4-bit values with one fp32 scale per output column and group of G inputs (G a multiple
// of 8, K padded to G). The activations are quantised as in vc_linear (plain or split rule).
// Packing: blocks of 16 output columns, inside a block K/8 octets of 64 bytes; byte 4c + j of
// octet o holds w[c, 8o + j] in its low nibble and w[c, 8o + 4 + j] in its high nibble, so one
// 64-byte load gives two VPDPBUSD weight registers (16 columns x 4 inputs each) after a nibble
// table lookup. The group scales are packed per block as (K / G, 16) floats. Each group's int32
// sum is scaled into an fp32 sum; the activation zero point comes off at the end through the
// precomputed column terms sum_g s_g sum_{k in g} w_k (vc_q4 callers pass them as `colterm`).
int64_t vc_q4_bytes(int64_t N, int64_t K, int64_t G) {
  return round_up(N, kBlock) * round_up(K, G) / 2;
}

void vc_q4_pack(const int8_t* w, int64_t N, int64_t K, int64_t G, uint8_t* packed) {
  const int64_t Kp = round_up(K, G);
  memset(packed, 0, (size_t)vc_q4_bytes(N, K, G));
  for (int64_t col = 0; col < N; ++col) {
    uint8_t* base = packed + (col / kBlock) * kBlock * Kp / 2 + (col % kBlock) * 4;
    for (int64_t k = 0; k < K; ++k) {
      const int64_t o = k / 8, j = k % 8;
      const uint8_t nib = (uint8_t)(w[col * K + k] & 0x0F);
      base[o * 64 + (j & 3)] |= j < 4 ? nib : (uint8_t)(nib << 4);
    }
  }
}

}  // extern "C"

namespace {

constexpr int kQ4Prefetch = 2048;

template <int R>
void rows_q4(const uint8_t* q, int64_t Kp, int64_t G, const uint8_t* wb, const float* sb,
             float* out) {
  const __m512i lut = _mm512_broadcast_i32x4(
      _mm_setr_epi8(0, 1, 2, 3, 4, 5, 6, 7, -8, -7, -6, -5, -4, -3, -2, -1));
  const __m512i low = _mm512_set1_epi8(0x0F);
  __m512 f[R];
  for (int r = 0; r < R; ++r) f[r] = _mm512_setzero_ps();
  const int64_t groups = Kp / G, octets = G / 8;
  for (int64_t g = 0; g < groups; ++g) {
    __m512i a[R];
    for (int r = 0; r < R; ++r) a[r] = _mm512_setzero_si512();
    for (int64_t o = 0; o < octets; ++o) {
      const uint8_t* p = wb + (g * octets + o) * 64;
      _mm_prefetch((const char*)(p + kQ4Prefetch), _MM_HINT_T0);
      const __m512i w = _mm512_loadu_si512((const void*)p);
      const __m512i lo = _mm512_shuffle_epi8(lut, _mm512_and_si512(w, low));
      const __m512i hi = _mm512_shuffle_epi8(lut, _mm512_and_si512(_mm512_srli_epi16(w, 4), low));
      const int64_t k = g * G + o * 8;
      for (int r = 0; r < R; ++r) {
        int32_t v0, v1;
        memcpy(&v0, q + r * Kp + k, 4);
        memcpy(&v1, q + r * Kp + k + 4, 4);
        a[r] = _mm512_dpbusd_epi32(a[r], _mm512_set1_epi32(v0), lo);
        a[r] = _mm512_dpbusd_epi32(a[r], _mm512_set1_epi32(v1), hi);
      }
    }
    const __m512 s = _mm512_loadu_ps(sb + g * 16);
    for (int r = 0; r < R; ++r) f[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(a[r]), s, f[r]);
  }
  for (int r = 0; r < R; ++r) _mm512_storeu_ps(out + r * kBlock, f[r]);
}

using Q4Fn = void (*)(const uint8_t*, int64_t, int64_t, const uint8_t*, const float*, float*);
const Q4Fn kRowsQ4[9] = {nullptr,    rows_q4<1>, rows_q4<2>, rows_q4<3>, rows_q4<4>,
                         rows_q4<5>, rows_q4<6>, rows_q4<7>, rows_q4<8>};

}  // namespace

extern "C" {

// out (n, N) = the 4-bit product of x (n, K); `scales` (blocks, K / G, 16) and `colterm` (N,)
// as packed above. Returns 0, or 1 when x holds NaN/inf (out untouched).
int vc_q4_linear(const float* x, int64_t n, int64_t K, int split, int64_t G, const uint8_t* packed,
                 const float* scales, const float* colterm, const float* bias, float* out,
                 int64_t N, int threads, int gelu) {
  if (n <= 0) return 0;
  const int64_t Kp = round_up(K, G);
  const int64_t qrows = split ? 2 * n : n;
  Quantised qa;
  const uint8_t* q = quantise_call(x, n, K, Kp, split, qrows, &qa);
  if (!q) return 1;
  const int64_t blocks = ceil_div(N, kBlock), groups = Kp / G;
  const float alpha = 1.0f / kSplitGain;
#pragma omp parallel num_threads(threads > 0 ? threads : 1)
  {
    int64_t b0, b1;
    thread_blocks(blocks, &b0, &b1);
    std::vector<float> acc((size_t)(qrows * kBlock));
    for (int64_t b = b0; b < b1; ++b) {
      const uint8_t* wb = packed + b * kBlock * Kp / 2;
      const float* sb = scales + b * groups * 16;
      for (int64_t r0 = 0; r0 < qrows; r0 += 8) {
        const int64_t R = qrows - r0 < 8 ? qrows - r0 : 8;
        kRowsQ4[R](q + r0 * Kp, Kp, G, wb, sb, acc.data() + r0 * kBlock);
      }
      const int64_t c0 = b * kBlock, width = N - c0 < kBlock ? N - c0 : kBlock;
      for (int64_t j = 0; j < width; ++j) {
        const int64_t col = c0 + j;
        const float offset = (float)qa.zero * colterm[col];
        for (int64_t r = 0; r < n; ++r) {
          float y = (acc[r * kBlock + j] - offset) * qa.step;
          if (split) y = fmaf((acc[(n + r) * kBlock + j] - offset) * qa.step, alpha, y);
          if (bias) y += bias[col];
          out[r * N + col] = y;
        }
      }
      if (gelu) gelu_block(out + c0, n, N, width);
    }
  }
  return 0;
}

// Depthwise stride-1 convolution of channels-last sequences ("valid" positions):
// out[b, t, c] = bias[c] + sum_j w[c, j] * x[b, t + j, c], with x (B, L, C) and
// out (B, L - k + 1, C). `taps` is the weight packed by vc_depthwise_pack: chunks of 64
// channels, each (k, 64) contiguous, so one task streams its taps. Each output sums its taps in
// order from an fp32 zero and adds the bias last, whatever the length, so a stream's steps give
// the same numbers as one offline call. Tasks: 64 channels x 4 frames (16 accumulators).
int64_t vc_depthwise_bytes(int64_t C, int64_t k) { return round_up(C, 64) * k * 4; }

void vc_depthwise_pack(const float* w, int64_t C, int64_t k, float* taps) {
  memset(taps, 0, (size_t)vc_depthwise_bytes(C, k));
  for (int64_t c = 0; c < C; ++c)
    for (int64_t j = 0; j < k; ++j) taps[((c / 64) * k + j) * 64 + c % 64] = w[c * k + j];
}

void vc_depthwise(const float* x, int64_t B, int64_t L, int64_t C, const float* taps, int64_t k,
                  const float* bias, float* out, int threads, int gelu) {
  const int64_t T = L - k + 1;
  if (T <= 0 || B <= 0) return;
  const int64_t chunks = ceil_div(C, 64), tblocks = ceil_div(T, 4);
  const int64_t tasks = B * tblocks * chunks;
#pragma omp parallel for num_threads(threads > 0 ? threads : 1) schedule(static) if (tasks > 1)
  for (int64_t task = 0; task < tasks; ++task) {
    const int64_t ch = task % chunks, tb = (task / chunks) % tblocks, b = task / (chunks * tblocks);
    const int64_t c0 = ch * 64, t0 = tb * 4;
    const int64_t frames = T - t0 < 4 ? T - t0 : 4;
    __mmask16 mask[4];
    for (int v = 0; v < 4; ++v) {
      const int64_t left = C - c0 - 16 * v;
      mask[v] = left >= 16 ? (__mmask16)0xFFFF : left <= 0 ? (__mmask16)0 : (__mmask16)((1u << left) - 1u);
    }
    const float* xb = x + (b * L + t0) * C + c0;
    const float* wc = taps + ch * k * 64;
    __m512 acc[4][4];
    for (int f = 0; f < 4; ++f)
      for (int v = 0; v < 4; ++v) acc[f][v] = _mm512_setzero_ps();
    for (int64_t j = 0; j < k; ++j) {
      const float* wj = wc + j * 64;
      _mm_prefetch((const char*)(wj + 512), _MM_HINT_T0);
      _mm_prefetch((const char*)(wj + 528), _MM_HINT_T0);
      _mm_prefetch((const char*)(wj + 544), _MM_HINT_T0);
      _mm_prefetch((const char*)(wj + 560), _MM_HINT_T0);
      __m512 w[4];
      for (int v = 0; v < 4; ++v) w[v] = _mm512_loadu_ps(wj + 16 * v);
      for (int64_t f = 0; f < frames; ++f) {
        const float* xf = xb + (j + f) * C;
        for (int v = 0; v < 4; ++v)
          acc[f][v] = _mm512_fmadd_ps(w[v], _mm512_maskz_loadu_ps(mask[v], xf + 16 * v), acc[f][v]);
      }
    }
    for (int v = 0; v < 4; ++v) {
      const __m512 bv = bias ? _mm512_maskz_loadu_ps(mask[v], bias + c0 + 16 * v) : _mm512_setzero_ps();
      for (int64_t f = 0; f < frames; ++f) {
        const __m512 y = _mm512_add_ps(acc[f][v], bv);
        _mm512_mask_storeu_ps(out + (b * T + t0 + f) * C + c0 + 16 * v, mask[v],
                              gelu ? gelu16(y) : y);
      }
    }
  }
}

// fp16 weights, fp32 activations and sums (the layers int8 mode keeps in floating point):
// out (n, N) = x (n, K) @ W^T + bias, W packed by vc_half_pack as blocks of 32 output columns,
// each (K, 32) fp16 contiguous. Each output sums k in order from an fp32 zero (fused
// multiply-adds) and adds the bias last.
int64_t vc_half_bytes(int64_t N, int64_t K) { return round_up(N, 32) * K * 2; }

void vc_half_pack(const float* w, int64_t N, int64_t K, uint16_t* packed) {
  memset(packed, 0, (size_t)vc_half_bytes(N, K));
  for (int64_t col = 0; col < N; ++col)
    for (int64_t k = 0; k < K; ++k)
      packed[((col / 32) * K + k) * 32 + col % 32] = to_half(w[col * K + k]);
}

}  // extern "C"

namespace {

template <int R>
void half_rows(const float* x, int64_t K, const uint16_t* wb, float* acc_out) {
  __m512 a[R][2];
  for (int r = 0; r < R; ++r) a[r][0] = a[r][1] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; ++k) {
    const uint16_t* p = wb + k * 32;
    _mm_prefetch((const char*)(p + 1024), _MM_HINT_T0);
    const __m512 w0 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)p));
    const __m512 w1 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(p + 16)));
    for (int r = 0; r < R; ++r) {
      const __m512 xv = _mm512_set1_ps(x[r * K + k]);
      a[r][0] = _mm512_fmadd_ps(xv, w0, a[r][0]);
      a[r][1] = _mm512_fmadd_ps(xv, w1, a[r][1]);
    }
  }
  for (int r = 0; r < R; ++r) {
    _mm512_storeu_ps(acc_out + r * 32, a[r][0]);
    _mm512_storeu_ps(acc_out + r * 32 + 16, a[r][1]);
  }
}

using HalfFn = void (*)(const float*, int64_t, const uint16_t*, float*);
const HalfFn kHalfRows[9] = {nullptr,       half_rows<1>, half_rows<2>, half_rows<3>, half_rows<4>,
                             half_rows<5>, half_rows<6>, half_rows<7>, half_rows<8>};

}  // namespace

extern "C" {

void vc_half_linear(const float* x, int64_t n, int64_t K, const uint16_t* packed,
                    const float* bias, float* out, int64_t N, int threads) {
  if (n <= 0) return;
  const int64_t blocks = ceil_div(N, 32);
#pragma omp parallel num_threads(threads > 0 ? threads : 1)
  {
    int64_t b0, b1;
    thread_blocks(blocks, &b0, &b1);
    alignas(64) float acc[8 * 32];
    for (int64_t b = b0; b < b1; ++b) {
      const uint16_t* wb = packed + b * K * 32;
      const int64_t c0 = b * 32, width = N - c0 < 32 ? N - c0 : 32;
      for (int64_t r0 = 0; r0 < n; r0 += 8) {
        const int64_t R = n - r0 < 8 ? n - r0 : 8;
        kHalfRows[R](x + r0 * K, K, wb, acc);
        for (int64_t r = 0; r < R; ++r)
          for (int64_t j = 0; j < width; ++j)
            out[(r0 + r) * N + c0 + j] = acc[r * 32 + j] + (bias ? bias[c0 + j] : 0.0f);
      }
    }
  }
}

// Grouped stride-1 convolution of channels-last sequences ("valid" positions), fp32 sums:
// x (B, L, C_in), weight (C_out, C_in / groups, k), out (B, L - k + 1, C_out). The weight is
// packed by vc_grouped_pack as, per group and block of 16 output channels, (k, C_in / groups, 16)
// contiguous, in fp32 or (half = 1) fp16, so each task streams its block once for all frames.
// Each output sums taps, then input channels, in order from an fp32 zero, and adds the bias last.
int64_t vc_grouped_bytes(int64_t c_out, int64_t cin_g, int64_t k, int64_t groups, int half) {
  const int64_t cout_g = c_out / groups;
  return groups * round_up(cout_g, 16) * cin_g * k * (half ? 2 : 4);
}

void vc_grouped_pack(const float* w, int64_t c_out, int64_t cin_g, int64_t k, int64_t groups,
                     int half, void* packed) {
  const int64_t cout_g = c_out / groups, blocks = ceil_div(cout_g, 16);
  memset(packed, 0, (size_t)vc_grouped_bytes(c_out, cin_g, k, groups, half));
  for (int64_t o = 0; o < c_out; ++o) {
    const int64_t g = o / cout_g, og = o % cout_g, b = og / 16, lane = og % 16;
    const int64_t base = ((g * blocks + b) * k * cin_g) * 16;
    for (int64_t i = 0; i < cin_g; ++i)
      for (int64_t j = 0; j < k; ++j) {
        const int64_t at = base + (j * cin_g + i) * 16 + lane;
        const float v = w[(o * cin_g + i) * k + j];
        if (half)
          ((uint16_t*)packed)[at] = to_half(v);
        else
          ((float*)packed)[at] = v;
      }
  }
}

}  // extern "C"

namespace {

template <bool Half>
inline __m512 load_taps(const void* w, int64_t at) {
  if constexpr (Half)
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)((const uint16_t*)w + at)));
  else
    return _mm512_loadu_ps((const float*)w + at);
}

template <bool Half>
void grouped_tasks(const float* x, int64_t B, int64_t L, int64_t c_in, const void* packed,
                   int64_t k, int64_t groups, int64_t c_out, const float* bias, float* out,
                   int threads) {
  const int64_t T = L - k + 1;
  const int64_t cin_g = c_in / groups, cout_g = c_out / groups, blocks = ceil_div(cout_g, 16);
  const int64_t fblocks = ceil_div(T, 8), tasks = B * groups * blocks * fblocks;
  const int64_t ahead = Half ? 1024 : 512;  // elements: 2 KB ahead
#pragma omp parallel for num_threads(threads > 0 ? threads : 1) schedule(static) if (tasks > 1)
  for (int64_t task = 0; task < tasks; ++task) {
    const int64_t fb = task % fblocks, gb = (task / fblocks) % (groups * blocks);
    const int64_t b = task / (fblocks * groups * blocks), g = gb / blocks, blk = gb % blocks;
    const int64_t t0 = fb * 8, frames = T - t0 < 8 ? T - t0 : 8;
    const int64_t o0 = blk * 16, width = cout_g - o0 < 16 ? cout_g - o0 : 16;
    const __mmask16 mask = (__mmask16)(width >= 16 ? 0xFFFF : (1u << width) - 1u);
    const int64_t wb = (gb * k * cin_g) * 16;
    const float* xb = x + (b * L + t0) * c_in + g * cin_g;
    __m512 acc[8];
    for (int f = 0; f < 8; ++f) acc[f] = _mm512_setzero_ps();
    for (int64_t j = 0; j < k; ++j) {
      const int64_t wj = wb + j * cin_g * 16;
      for (int64_t i = 0; i < cin_g; ++i) {
        const int64_t at = wj + i * 16;
        _mm_prefetch((const char*)packed + (at + ahead) * (Half ? 2 : 4), _MM_HINT_T0);
        const __m512 w = load_taps<Half>(packed, at);
        const float* xi = xb + j * c_in + i;
        for (int64_t f = 0; f < frames; ++f)
          acc[f] = _mm512_fmadd_ps(_mm512_set1_ps(xi[f * c_in]), w, acc[f]);
      }
    }
    const __m512 bv = bias ? _mm512_maskz_loadu_ps(mask, bias + g * cout_g + o0) : _mm512_setzero_ps();
    for (int64_t f = 0; f < frames; ++f)
      _mm512_mask_storeu_ps(out + (b * T + t0 + f) * c_out + g * cout_g + o0, mask,
                            _mm512_add_ps(acc[f], bv));
  }
}

}  // namespace

extern "C" {

void vc_grouped(const float* x, int64_t B, int64_t L, int64_t c_in, const void* packed,
                int64_t k, int64_t groups, int64_t c_out, int half, const float* bias, float* out,
                int threads) {
  if (L - k + 1 <= 0 || B <= 0) return;
  if (half)
    grouped_tasks<true>(x, B, L, c_in, packed, k, groups, c_out, bias, out, threads);
  else
    grouped_tasks<false>(x, B, L, c_in, packed, k, groups, c_out, bias, out, threads);
}

// Strided convolution of channels-last sequences as a product over windows, in three bf16
// AMX products with fp32 sums: x = xh + xl and w = wh + wl in bf16 (the high part rounded, the
// low part the remainder rounded), x w ~ xh wh + xl wh + xh wl (the dropped xl wl is below
// 2^-16 relative), about fp32's accuracy at the speed of bf16 tiles. Output frame t reads the
// window x[b, t * stride .. t * stride + k), which in channels-last order is k * C_in consecutive
// floats: one row of the product, with no copy. Weight rows (C_out, k * C_in) in window order
// are packed by vc_bf16x3_pack as blocks of 16 output channels, each (K / 2, 16, 2) bf16, K
// padded to 32, high parts first, then low parts.
int64_t vc_bf16x3_bytes(int64_t N, int64_t K) {
  return 2 * round_up(N, 16) * round_up(K, 32) * 2;
}

static inline uint16_t bf16_round(float v) {
  uint32_t u;
  memcpy(&u, &v, 4);
  u += 0x7FFFu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

static inline float bf16_value(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float v;
  memcpy(&v, &u, 4);
  return v;
}

void vc_bf16x3_pack(const float* w, int64_t N, int64_t K, uint16_t* packed) {
  const int64_t Kp = round_up(K, 32), half = round_up(N, 16) * Kp;
  memset(packed, 0, (size_t)vc_bf16x3_bytes(N, K));
  for (int64_t col = 0; col < N; ++col)
    for (int64_t k = 0; k < K; ++k) {
      const float v = w[col * K + k];
      const uint16_t hi = bf16_round(v);
      const int64_t at = (col / 16) * 16 * Kp + (k / 2) * 32 + (col % 16) * 2 + (k % 2);
      packed[at] = hi;
      packed[half + at] = bf16_round(v - bf16_value(hi));
    }
}

void vc_bf16x3_windows(const float* x, int64_t B, int64_t L, int64_t C, int64_t k, int64_t stride,
                       const uint16_t* packed, const float* bias, float* out, int64_t N,
                       int threads) {
  if (B <= 0 || L < k) return;
  const int64_t T = (L - k) / stride + 1, M = B * T, K = k * C;
  const int64_t Kp = round_up(K, 32), Mp = round_up(M, 16);
  const int64_t blocks = ceil_div(N, 16), half = blocks * 16 * Kp;
  thread_local std::vector<uint16_t> abuf;
  abuf.assign((size_t)(2 * Mp * Kp), 0);
  uint16_t* ah = abuf.data();
  uint16_t* al = ah + Mp * Kp;
  for (int64_t m = 0; m < M; ++m) {
    const float* row = x + ((m / T) * L + (m % T) * stride) * C;
    int64_t i = 0;
    for (; i + 16 <= K; i += 16) {  // the same rounding as bf16_round, 16 at a time
      const __m512 v = _mm512_loadu_ps(row + i);
      const __m256bh hi = _mm512_cvtneps_pbh(v);
      const __m512 back = _mm512_castsi512_ps(
          _mm512_slli_epi32(_mm512_cvtepu16_epi32((__m256i)hi), 16));
      const __m256bh lo = _mm512_cvtneps_pbh(_mm512_sub_ps(v, back));
      _mm256_storeu_si256((__m256i*)(ah + m * Kp + i), (__m256i)hi);
      _mm256_storeu_si256((__m256i*)(al + m * Kp + i), (__m256i)lo);
    }
    for (; i < K; ++i) {
      const uint16_t hi = bf16_round(row[i]);
      ah[m * Kp + i] = hi;
      al[m * Kp + i] = bf16_round(row[i] - bf16_value(hi));
    }
  }
  const int64_t depth = Kp / 32;
#pragma omp parallel num_threads(threads > 0 ? threads : 1)
  {
    int64_t b0, b1;
    thread_blocks(blocks, &b0, &b1);
    if (b0 < b1) {
      // two accumulators, activation high and low parts, two blocks' weight high and low parts
      configure_tiles({16, 16, 16, 16, 16, 16, 16, 16});
      alignas(64) float c[2][16 * 16];
      for (int64_t b = b0; b < b1; b += 2) {
        // two blocks of 16 output channels share each activation tile (one block at the end)
        const bool pair = b + 1 < b1;
        const uint16_t* wh0 = packed + b * 16 * Kp;
        const uint16_t* wl0 = wh0 + half;
        const uint16_t* wh1 = pair ? wh0 + 16 * Kp : wh0;
        const uint16_t* wl1 = wh1 + half;
        for (int64_t r0 = 0; r0 < Mp; r0 += 16) {
          _tile_zero(0);
          _tile_zero(1);
          for (int64_t kb = 0; kb < depth; ++kb) {
            _tile_loadd(2, ah + r0 * Kp + kb * 32, Kp * 2);
            _tile_loadd(3, al + r0 * Kp + kb * 32, Kp * 2);
            _tile_loadd(4, wh0 + kb * 512, 64);
            _tile_loadd(5, wl0 + kb * 512, 64);
            _tile_dpbf16ps(0, 2, 4);
            if (pair) {
              _tile_loadd(6, wh1 + kb * 512, 64);
              _tile_loadd(7, wl1 + kb * 512, 64);
              _tile_dpbf16ps(1, 2, 6);
            }
            _tile_dpbf16ps(0, 3, 4);
            if (pair) _tile_dpbf16ps(1, 3, 6);
            _tile_dpbf16ps(0, 2, 5);
            if (pair) _tile_dpbf16ps(1, 2, 7);
          }
          _tile_stored(0, c[0], 64);
          if (pair) _tile_stored(1, c[1], 64);
          const int64_t rows = M - r0 < 16 ? M - r0 : 16;
          for (int h = 0; h < (pair ? 2 : 1); ++h) {
            const int64_t c0 = (b + h) * 16, width = N - c0 < 16 ? N - c0 : 16;
            for (int64_t r = 0; r < rows; ++r)
              for (int64_t j = 0; j < width; ++j)
                out[(r0 + r) * N + c0 + j] = c[h][r * 16 + j] + (bias ? bias[c0 + j] : 0.0f);
          }
        }
      }
      _tile_release();
    }
  }
}

}  // extern "C"
