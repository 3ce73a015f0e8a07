// A minimal SVG line-chart panel shared by `zerospeed plot` (training curves) and
// `zerospeed bench serve` (latency against throughput). Self-contained SVG, no library.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace zs::cli {

struct SvgSeries {
    std::string name, color;
    std::vector<std::pair<double, double>> pts;  // (x, y), drawn in order
};

// One framed panel at (x0, y0) of size w x h with a title, y grid labels, the x range labelled
// with `xlabel`, one polyline per series (points marked when there are few) and a legend.
std::string svg_panel(const std::vector<SvgSeries>& series, const std::string& title,
                      const std::string& xlabel, double x0, double y0, double w, double h,
                      bool log_y);

}  // namespace zs::cli
