// Validation of the arena's results JSON (see report_data.h): every field is read through a
// Reader that knows its path, so an error can say exactly which field was wrong and why.
#include "bench/report_data.h"

#include "core/error.h"

namespace sw::bench {
namespace {

using nlohmann::json;

[[noreturn]] void fail_at(const std::string& source, const std::string& field, const std::string& expected,
                          const json& got) {
  std::string shown = got.dump();
  if (shown.size() > 40) shown = shown.substr(0, 37) + "...";
  throw Error(
      str_cat("[report] ", source, ": ", field, ": expected ", expected, ", got ", got.type_name(), " ", shown));
}

// Reads fields of one JSON object; errors say "[report] <source>: <path>.<key>: expected ...".
class Reader {
 public:
  Reader(const std::string& source, const json& obj, std::string path)
      : source_(source), obj_(obj), path_(std::move(path)) {}

  std::string where(std::string_view key) const {
    return path_.empty() ? std::string(key) : path_ + "." + std::string(key);
  }
  [[noreturn]] void fail(const std::string& field, const std::string& expected, const json& got) const {
    fail_at(source_, field, expected, got);
  }
  const json* get(std::string_view key) const {
    auto it = obj_.find(key);
    return it == obj_.end() || it->is_null() ? nullptr : &*it;
  }
  double number(std::string_view key) const {
    const json* v = get(key);
    if (!v) return kMissing;
    if (!v->is_number()) fail(where(key), "a number", *v);
    return v->get<double>();
  }
  std::string string(std::string_view key) const {
    const json* v = get(key);
    if (!v) return "";
    if (!v->is_string()) fail(where(key), "a string", *v);
    return v->get<std::string>();
  }
  const json* array(std::string_view key) const {
    const json* v = get(key);
    if (v && !v->is_array()) fail(where(key), "an array", *v);
    return v;
  }
  // A child object's reader (an empty object when missing, so its fields read as missing).
  Reader object(std::string_view key) const {
    static const json kEmpty = json::object();
    const json* v = get(key);
    if (v && !v->is_object()) fail(where(key), "an object", *v);
    return Reader(source_, v ? *v : kEmpty, where(key));
  }
  // Each element of an array of objects, as a reader named "<path>.<key>[i]".
  std::vector<Reader> objects(std::string_view key) const {
    std::vector<Reader> out;
    const json* a = array(key);
    if (!a) return out;
    for (size_t i = 0; i < a->size(); ++i) {
      std::string w = where(key) + "[" + std::to_string(i) + "]";
      if (!(*a)[i].is_object()) fail(w, "an object", (*a)[i]);
      out.emplace_back(source_, (*a)[i], w);
    }
    return out;
  }

 private:
  const std::string& source_;
  const json& obj_;
  std::string path_;
};

std::vector<ReportSample> samples(const Reader& m, const char* key, const char* len_key, const char* value_key,
                            const char* util_key) {
  std::vector<ReportSample> out;
  for (const Reader& r : m.objects(key))
    out.push_back({r.number(len_key), r.number(value_key), util_key ? r.number(util_key) : kMissing});
  return out;
}

}  // namespace

ReportData parse_report_data(const json& j, const std::string& source) {
  ReportData res;
  if (!j.is_object()) fail_at(source, "(top level)", "an object with \"meta\" and \"models\"", j);
  Reader top(source, j, "");
  if (!top.get("models"))
    throw Error(str_cat("[report] ", source, ": models: expected an array of models, got nothing"));
  Reader meta = top.object("meta"), ceil = meta.object("ceilings");
  res.meta = {meta.string("created"), meta.string("corpus"), meta.number("budget_tokens"), meta.number("seed"),
              ceil.number("threads"), ceil.number("f32_gemm_gflops"), ceil.number("bf16_gemm_gflops"),
              ceil.number("triad_gbs"), ceil.number("read_gbs")};
  int index = 0;
  for (const Reader& r : top.objects("models")) {
    ReportModel m;
    m.preset = r.string("preset");
    if (m.preset.empty())
      r.fail(r.where("preset"), "a non-empty preset name", r.get("preset") ? *r.get("preset") : json());
    m.family = r.string("family");
    m.params = r.number("params");
    m.active_params = r.number("active_params");
    Reader train = r.object("train"), quality = r.object("quality");
    m.train_tokens = train.number("tokens");
    m.train_seconds = train.number("seconds");
    m.train_tps = train.number("tokens_per_s");
    if (const json* lc = train.array("loss_curve")) {
      for (size_t i = 0; i < lc->size(); ++i) {
        const json& p = (*lc)[i];
        if (!p.is_array() || p.size() != 2 || !p[0].is_number() || !p[1].is_number())
          train.fail(train.where("loss_curve") + "[" + std::to_string(i) + "]", "[step, loss] (two numbers)", p);
        m.loss_curve.emplace_back(p[0].get<double>(), p[1].get<double>());
      }
    }
    m.val_loss = quality.number("val_loss");
    m.val_bpb = quality.number("val_bpb");
    for (const Reader& q : r.objects("mqar"))
      m.mqar.push_back({q.number("pairs"), q.number("seq_len"), q.number("accuracy")});
    m.state_bytes = samples(r, "state_bytes", "context", "bytes", nullptr);
    m.prefill = samples(r, "prefill", "len", "tokens_per_s", "mfu");
    m.decode = samples(r, "decode", "context", "tokens_per_s", "mbu");
    m.memory = samples(r, "memory", "len", "peak_bytes", nullptr);
    m.style = index++;
    res.models.push_back(std::move(m));
  }
  return res;
}

}  // namespace sw::bench
