// CsvMonitor: DeepSpeed's csv_monitor. One CSV file per metric in <output_path>/<job_name>/,
// named after the event with '/' and ' ' replaced by '_' (Train_Samples_train_loss.csv), each
// with the header "step,<last part of the name>" and one "<global samples>,<value>" row per
// optimizer step, appended as the run goes (rank 0 only, as DeepSpeed's). Events:
// Train/Samples/train_loss, lr, loss_scale (fp16), eval_loss (when evaluated) and, with
// wall_clock_breakdown, elapsed_time_ms_{forward,backward,backward_allreduce,step}.
#pragma once

#include <set>
#include <string>

#include "train/ds_config.h"

namespace zs::train {

class CsvMonitor {
public:
    // Creates the directory; IoError naming it when that fails.
    explicit CsvMonitor(const MonitorConfig& cfg);
    const std::string& dir() const { return dir_; }
    // Appends `value` at x = `samples` to the event's file (header first, once per run).
    void write(const std::string& event, double value, int64_t samples);

private:
    std::string dir_;
    std::set<std::string> started_;  // files whose header this run has written
};

}  // namespace zs::train
