// SageAttention-style forward (v1, int8 QK^T): exact softmax attention with quantised logits.
//
//   k_s = k - mean_over_tokens(k) per (batch, kv head)   ("smooth K": shifts each row's logits by
//                                                          the constant q . mean, so exact under softmax)
//   qs  = q * scale * log2(e)
//   per query tile (64 rows):          sQ = max|qs| / 127,  q8 = round_half_away(qs / sQ)
//   per aligned key block (64 tokens): sK = max|k_s| / 127, k8 = round_half_away(k_s / sK)
//   logits (log2 units) = (q8 . k8 as an exact integer dot product) * sQ * sK
//   online softmax and P.V in fp32 (V unquantised), as flash_attention_forward.
// The returned lse is corrected by + scale * q . mean(k), so it is the lse of the unsmoothed logits;
// learned sink logits are shifted by the same per-row constant. Mask options as attention_params.h.
// Error vs exact attention is measured in the tests (see attention_test.cpp, Sage section);
// sage_attention_test.cpp checks that every int8 path gives the same bits.
// Scratch: slot 0 of every OpenMP thread (tiles), slot 1 of the calling thread (key means, scales
// and codes of all of K: about B * Hkv * Tk * (Dk + 8) bytes, more on the AVX2 path, see below).
//
// What runs where. Up front, once per call: the key means and the int8 codes of every aligned
// 64-key block of every (batch, kv head), shared by all query tiles and all query heads of a GQA
// group. Per 64-row query tile: q is quantised once; per key chunk the int8 x int8 products
// (exact integer dot products), then the fp32 online softmax (exp2 polynomial, AVX2 intrinsics)
// and the fp32 P.V product fused with the running rescale (AVX2 intrinsics, 2 x 32 accumulators).
// The int8 products run on one of (SageIsa, chosen at run time, identical results bit for bit):
//   AVX512-VNNI  vpdpbusd (q offset by +128 to unsigned, a per-key correction); compiled with a
//                target attribute and selected by __builtin_cpu_supports("avx512vnni");
//   AVX2         vpsignb + vpmaddubsw + vpmaddwd for ~2/3 of the dimensions, and FMAs on the
//                integer-valued codes (exact) for the rest, interleaved: on Zen-class cores the
//                integer multiplies have one vector pipe and FMAs two, so int8 alone only ties
//                fp32 there (measured on Zen1: 15-19 us per 64x64x64 QK^T block for int8 alone,
//                the split and fp32 FMAs alike, within the noise of a shared machine);
//   scalar       portable integer loops (the reference the others are tested against).
// CPU note (AMD EPYC Zen1, AVX2 + FMA, no AVX-512/VNNI; B=1, Hq=Hkv=8, D=64, causal, 2 threads,
// median of >= 5 repeats, quiet machine): Sage int8 vs fp32 flash_attention_forward prefill,
// T=1024 1.12x, T=2048 1.16x, T=4096 1.25x faster (flash ~40 GFLOP/s, Sage ~48 GFLOP/s counted as
// 4 * T^2/2 * D * H; `speedwins bench --attention 1024,2048,4096`). On this CPU the gain comes
// less from int8 than from what Sage does differently around it: K quantised once per call, the
// intrinsic exp2 (6 vs 9 us per 64x64 block) and the rescale fused into P.V. fp32 P.V is then
// about 40% of the time. The VNNI path (64 int8 MACs per instruction) should make QK^T several
// times cheaper than fp32 FMAs; not measured here, no such CPU was available.
//
// Layout: q [B, Tq, Hq, Dk], k [B, Tk, Hkv, Dk], v [B, Tk, Hkv, Dv], o [B, Tq, Hq, Dv], lse [B, Hq, Tq].
#pragma once

#include "kernels/attention/attention_params.h"

namespace sw::kernels::attention {

// Which implementation of the int8 x int8 products runs. Every path computes the same exact integer
// dot products, so the outputs are identical bit for bit whatever the choice; only kAuto (the best
// available) is for production, the others let tests and benchmarks compare the paths.
enum class SageIsa {
  kAuto,        // kAvx512Vnni if the CPU has it, else kAvx2 if compiled in, else kScalar
  kScalar,      // portable C++ integer loops
  kAvx2,        // vpsignb + vpmaddubsw + vpmaddwd (needs a build with AVX2)
  kAvx512Vnni,  // vpdpbusd (compiled with a target attribute; needs a CPU with AVX512-VNNI)
};
bool sage_isa_supported(SageIsa isa);   // compiled in and usable on this CPU
SageIsa sage_resolve_isa(SageIsa isa);  // kAuto -> the path that would run; others unchanged
const char* sage_isa_name(SageIsa isa); // "auto", "scalar", "avx2", "avx512vnni"

// Forward only. smooth_k = false skips the mean subtraction (to show what smoothing buys).
// Throws sw::Error if `isa` is not supported (sage_isa_supported).
void sage_attention_forward(const float* q,  // [B, Tq, Hq, Dk]
                            const float* k,  // [B, Tk, Hkv, Dk]
                            const float* v,  // [B, Tk, Hkv, Dv]
                            const AttentionDims& dims, const AttentionParams& params, bool smooth_k,
                            float* o,    // [B, Tq, Hq, Dv]
                            float* lse,  // [B, Hq, Tq] or nullptr
                            SageIsa isa = SageIsa::kAuto);

}  // namespace sw::kernels::attention
