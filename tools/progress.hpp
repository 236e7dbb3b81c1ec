// Progress on stderr while a command works, only when stderr is a terminal and the answer is
// not --json (pipes and scripts stay clean); each show() rewrites the line, and the line is
// cleared when the Progress goes out of scope.
//
//   Progress progress(args.json);
//   if (progress) progress.show(fmt::format("searching {} [{}/{}]", name, k + 1, n));
#pragma once
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <iostream>
#include <string>

namespace remat::cli {

class Progress {
  public:
    explicit Progress(bool json) : on_(!json && isatty(STDERR_FILENO)) {}
    Progress(const Progress&) = delete;
    Progress& operator=(const Progress&) = delete;
    ~Progress() {
        if (width_) std::cerr << "\r" << std::string(width_, ' ') << "\r" << std::flush;
    }
    explicit operator bool() const { return on_; }
    void show(const std::string& line) {
        std::cerr << "\r" << line
                  << std::string(width_ > line.size() ? width_ - line.size() : 0, ' ')
                  << std::flush;
        width_ = std::max(width_, line.size());
    }

  private:
    bool on_;
    std::size_t width_ = 0;
};

}  // namespace remat::cli
