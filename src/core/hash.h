// Hashing. hash64: a fast 64-bit checksum of bytes for checkpoint integrity (not cryptographic): four FNV-1a-style
// lanes over 8-byte words (xor, then multiply by the FNV prime, which is odd and so a bijection
// mod 2^64), folded together with the length. Any change to one word changes its lane's state and
// hence the result; four independent lanes keep the multiplies in flight (several GB/s).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>

namespace sw {

// SplitMix64's finaliser (Steele et al.): a bijective mix of 64 bits, for seeds derived from
// several integers (a layer's random blocks, a training row's mask draw) without a stored state.
inline uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

inline uint64_t hash64(const void* data, size_t n) {
  constexpr uint64_t kPrime = 0x100000001b3ull, kBasis = 0xcbf29ce484222325ull;
  const unsigned char* p = static_cast<const unsigned char*>(data);
  uint64_t lane[4] = {kBasis, kBasis ^ 1, kBasis ^ 2, kBasis ^ 3};
  size_t i = 0;
  for (; i + 32 <= n; i += 32)
    for (int l = 0; l < 4; ++l) {
      uint64_t w;
      std::memcpy(&w, p + i + 8 * l, 8);
      lane[l] = (lane[l] ^ w) * kPrime;
    }
  uint64_t h = kBasis;
  for (; i < n; ++i) h = (h ^ p[i]) * kPrime;  // the tail, byte by byte
  for (uint64_t x : lane) h = (h ^ x) * kPrime, h ^= h >> 29;
  return (h ^ static_cast<uint64_t>(n)) * kPrime;
}

inline std::string hash64_hex(const void* data, size_t n) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(hash64(data, n)));
  return buf;
}
inline std::string hash64_hex(const std::string& s) { return hash64_hex(s.data(), s.size()); }

}  // namespace sw
