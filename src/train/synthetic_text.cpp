#include "train/synthetic_text.h"

#include <random>
#include <vector>

#include "train/data.h"

namespace sw::train {

std::string synthetic_text(int64_t n_bytes, uint64_t seed) {
  static const std::vector<std::string> names = {"Alice", "Bob", "Carol", "Dmitri", "Esther", "Farid", "Grace", "Hiro"};
  static const std::vector<std::string> nouns = {"river", "house", "letter", "garden", "machine", "city", "song", "bridge"};
  static const std::vector<std::string> adjs = {"old", "quiet", "bright", "broken", "distant", "small", "green", "famous"};
  static const std::vector<std::string> verbs = {"saw", "built", "found", "painted", "crossed", "wrote", "opened", "sold"};
  static const std::vector<std::string> places = {"near the sea", "in the north", "before dawn", "after the war",
                                                  "by the station", "under the hill"};
  std::mt19937_64 rng(seed);
  auto pick = [&](const std::vector<std::string>& v) -> const std::string& { return v[uniform_below(rng, v.size())]; };
  std::string out;
  out.reserve(static_cast<size_t>(n_bytes) + 128);
  while (static_cast<int64_t>(out.size()) < n_bytes) {
    const std::string& who = pick(names);
    std::string s = who + " " + pick(verbs) + " the " + pick(adjs) + " " + pick(nouns);
    if (uniform_below(rng, 2)) s += " " + pick(places);
    s += ".";
    // A follow-up sentence refers back to the same person: long-range structure to model.
    if (uniform_below(rng, 3) == 0) s += " Later " + who + " " + pick(verbs) + " it again.";
    out += s;
    out += uniform_below(rng, 6) == 0 ? "\n\n" : " ";
  }
  out.resize(static_cast<size_t>(n_bytes));
  return out;
}

}  // namespace sw::train
