#include "base/progress.h"

#include <cmath>
#include <cstdio>

#include <fmt/format.h>
#include <unistd.h>

namespace zs {

Progress::Progress(std::string label, int64_t total, std::string unit, double min_interval_s)
    : label_(std::move(label)),
      unit_(std::move(unit)),
      total_(total),
      min_interval_s_(min_interval_s),
      tty_(isatty(STDERR_FILENO) != 0) {}

Progress::~Progress() {
    if (!finished_ && done_ > 0) finish();
}

std::string Progress::human(double v) {
    const char* suffix[] = {"", " k", " M", " G", " T"};
    int i = 0;
    while (std::fabs(v) >= 1000.0 && i < 4) {
        v /= 1000.0;
        ++i;
    }
    return i == 0 ? fmt::format("{:.0f}", v) : fmt::format("{:.2f}{}", v, suffix[i]);
}

std::string Progress::duration(double s) {
    if (!std::isfinite(s) || s < 0) return "?";
    if (s < 10) return fmt::format("{:.1f}s", s);
    auto t = static_cast<int64_t>(s + 0.5);
    if (t >= 3600) return fmt::format("{}h{:02d}m", t / 3600, (t % 3600) / 60);
    if (t >= 60) return fmt::format("{}m{:02d}s", t / 60, t % 60);
    return fmt::format("{}s", t);
}

void Progress::update(int64_t done, const std::string& extra) {
    done_ = done;
    double now = timer_.seconds();
    if (now - last_print_ < min_interval_s_) return;
    last_print_ = now;
    print(false, extra);
}

void Progress::finish(const std::string& extra) {
    if (finished_) return;
    finished_ = true;
    print(true, extra);
}

void Progress::print(bool final_line, const std::string& extra) {
    double el = timer_.seconds();
    double rate = el > 0 ? static_cast<double>(done_) / el : 0.0;
    std::string line = label_ + ": ";
    if (total_ > 0) {
        double frac = static_cast<double>(done_) / static_cast<double>(total_);
        line += fmt::format("{:5.1f}% {}/{} {}", 100.0 * frac, human(static_cast<double>(done_)),
                            human(static_cast<double>(total_)), unit_);
    } else {
        line += fmt::format("{} {}", human(static_cast<double>(done_)), unit_);
    }
    // Under one unit a second (a training step of several seconds), seconds per unit read better
    // than "0 step/s".
    if (rate > 0 && rate < 1.0) {
        line += fmt::format(" | {:.1f} s/{}", 1.0 / rate, unit_);
    } else {
        line += fmt::format(" | {} {}/s", human(rate), unit_);
    }
    if (final_line) {
        line += fmt::format(" | took {}", duration(el));
    } else if (total_ > 0 && rate > 0) {
        line += fmt::format(" | ETA {}", duration(static_cast<double>(total_ - done_) / rate));
    }
    if (!extra.empty()) line += " | " + extra;
    if (tty_) {
        std::fprintf(stderr, "\r\033[K%s%s", line.c_str(), final_line ? "\n" : "");
    } else {
        std::fprintf(stderr, "%s\n", line.c_str());
    }
    std::fflush(stderr);
}

}  // namespace zs
