// A one-line progress indicator with rate and ETA, for long work (data prep, training, downloads).
//
// On a terminal the line rewrites itself in place; otherwise (logs, CI) it prints a fresh line at
// most every `min_interval_s` seconds. Output goes to stderr.
#pragma once

#include <cstdint>
#include <string>

#include "base/timer.h"

namespace zs {

class Progress {
public:
    // `total` units of work (0 = unknown), `unit` names them ("tok", "B", "step").
    Progress(std::string label, int64_t total, std::string unit, double min_interval_s = 0.5);
    ~Progress();
    Progress(const Progress&) = delete;
    Progress& operator=(const Progress&) = delete;

    // Advance to `done` units; `extra` is appended to the line (e.g. "loss 3.21").
    void update(int64_t done, const std::string& extra = {});
    void finish(const std::string& extra = {});

    // "1.2 k", "3.4 M": a compact number for progress lines.
    static std::string human(double v);
    // "1h02m", "3m04s", "12s".
    static std::string duration(double seconds);

private:
    void print(bool final_line, const std::string& extra);

    std::string label_, unit_;
    int64_t total_, done_ = 0;
    double min_interval_s_, last_print_ = -1e9;
    bool tty_, finished_ = false;
    Timer timer_;
};

}  // namespace zs
