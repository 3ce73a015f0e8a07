#include "train/monitor.h"

#include <filesystem>
#include <fstream>

#include <fmt/format.h>

#include "base/error.h"

namespace zs::train {

CsvMonitor::CsvMonitor(const MonitorConfig& cfg) {
    dir_ = (std::filesystem::path(cfg.output_path) / cfg.job_name).string();
    std::error_code ec;
    std::filesystem::create_directories(dir_, ec);
    ZS_CHECK_T(IoError, !ec, "csv_monitor: cannot create {}: {}", dir_, ec.message());
}

void CsvMonitor::write(const std::string& event, double value, int64_t samples) {
    std::string file = event;
    for (char& c : file)
        if (c == '/' || c == ' ') c = '_';
    const std::string path = dir_ + "/" + file + ".csv";
    std::ofstream out(path, std::ios::app);
    ZS_CHECK_T(IoError, out.good(), "csv_monitor: cannot write {}", path);
    if (started_.insert(file).second) {
        const size_t slash = event.rfind('/');
        out << "step," << (slash == std::string::npos ? event : event.substr(slash + 1)) << "\n";
    }
    out << samples << "," << fmt::format("{}", value) << "\n";
    ZS_CHECK_T(IoError, out.good(), "csv_monitor: write error on {}", path);
}

}  // namespace zs::train
