// Running programs from tests: a shell command's combined output and how it ended, and the
// speedwins binary (SW_CLI, set by ctest) driven the way a user drives it.
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <string>

namespace sw::testing {

struct ProcessRun {
  int status = -1;         // exit code; 128 + signal when killed by one
  bool signaled = false;   // killed by a signal (the shell reports that as an exit code 128 + s)
  std::string output;      // stdout and stderr together
};

// Runs `cmd` under /bin/sh with stderr folded into stdout. Exit codes 130 and 143 are speedwins'
// own status after handling SIGINT / SIGTERM (an orderly stop), so they do not count as signaled.
inline ProcessRun run_shell(const std::string& cmd) {
  ProcessRun r;
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return r.output = "popen failed", r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  const int st = ::pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  r.signaled = WIFSIGNALED(st) || (WIFEXITED(st) && r.status > 128 && r.status != 130 && r.status != 143);
  return r;
}

// The speedwins binary named by SW_CLI.
inline std::string cli_binary() {
  const char* c = std::getenv("SW_CLI");
  EXPECT_NE(c, nullptr) << "SW_CLI must name the speedwins binary (set by ctest)";
  return c ? c : "speedwins";
}

// `speedwins <args>`, with `env` ("NAME=value ...") in front when given.
inline ProcessRun run_cli(const std::string& args, const std::string& env = "") {
  return run_shell(env + (env.empty() ? "" : " ") + cli_binary() + " " + args);
}

}  // namespace sw::testing
