// A minimal SVG line-chart panel shared by `zerospeed plot` (training curves) and
// `zerospeed bench serve` (latency against throughput). Self-contained SVG, no library.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "parallel/pipeline_schedule.h"

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

// A pipeline timeline (simulated or measured): one row per rank, one box per compute instruction
// coloured by kind (forward, fused backward, B, W) and labelled with its micro-batch.
std::string pipeline_timeline_svg(int stages, const parallel::PipeTimeline& tl,
                                  const std::string& title, const std::string& time_unit);

}  // namespace zs::cli
