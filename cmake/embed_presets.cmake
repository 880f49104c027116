# Writes OUT: a C++ source holding every preset JSON in IN (a |-separated list of files) as a string, so the
# binary carries its presets and runs from any directory.
set(body "// Generated from configs/*.json by cmake/embed_presets.cmake. Do not edit.\n#include \"models/presets.h\"\nnamespace sw::models {\nconst std::vector<EmbeddedPreset>& embedded_presets() {\n  static const std::vector<EmbeddedPreset> p = {\n")
string(REPLACE "|" ";" files "${IN}")
foreach(f ${files})
  get_filename_component(name ${f} NAME_WE)
  file(READ ${f} text)
  string(APPEND body "    {\"${name}\", R\"SWJSON(${text})SWJSON\"},\n")
endforeach()
string(APPEND body "  };\n  return p;\n}\n}  // namespace sw::models\n")
file(WRITE ${OUT}.tmp "${body}")
file(COPY_FILE ${OUT}.tmp ${OUT} ONLY_IF_DIFFERENT)
