// `zerospeed plot`: the metrics a training run wrote (CSV or JSONL) as an SVG: training and
// validation loss, learning rate, and throughput against the step, for people who would rather
// look than read. Self-contained SVG (no plotting library).
#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "cli/commands.h"
#include "cli/svg.h"
#include "io/atomic_file.h"
#include "io/json.h"

namespace zs::cli {

namespace {

using Series = SvgSeries;

// Read step and the named columns from CSV (header row) or JSONL.
std::map<std::string, std::vector<std::pair<double, double>>> read_metrics(
    const std::string& path) {
    std::string text = io::read_file(path);
    std::map<std::string, std::vector<std::pair<double, double>>> cols;
    std::istringstream in(text);
    std::string line;
    if (path.ends_with(".jsonl")) {
        int n = 0;
        while (std::getline(in, line)) {
            ++n;
            if (line.empty()) continue;
            nlohmann::json j = io::parse_json(line, fmt::format("{}: line {}", path, n));
            ZS_CHECK_T(IoError, j.is_object() && j.contains("step"), "{}: line {} has no 'step'",
                       path, n);
            for (auto it = j.begin(); it != j.end(); ++it) {
                if (it.value().is_number())
                    cols[it.key()].emplace_back(j["step"].get<double>(), it.value().get<double>());
            }
        }
        return cols;
    }
    ZS_CHECK_T(IoError, static_cast<bool>(std::getline(in, line)), "{}: empty metrics file", path);
    std::vector<std::string> header;
    {
        std::istringstream hs(line);
        for (std::string h; std::getline(hs, h, ',');) header.push_back(h);
    }
    auto step_col = std::find(header.begin(), header.end(), "step");
    ZS_CHECK_T(IoError, step_col != header.end(), "{}: CSV header has no 'step' column", path);
    size_t si = static_cast<size_t>(step_col - header.begin());
    while (std::getline(in, line)) {
        std::vector<std::string> f;
        std::istringstream ls(line);
        for (std::string v; std::getline(ls, v, ',');) f.push_back(v);
        if (f.size() <= si) continue;
        double step = std::strtod(f[si].c_str(), nullptr);
        for (size_t c = 0; c < f.size() && c < header.size(); ++c) {
            if (f[c].empty()) continue;
            char* end = nullptr;
            double v = std::strtod(f[c].c_str(), &end);
            if (end != f[c].c_str()) cols[header[c]].emplace_back(step, v);
        }
    }
    return cols;
}

}  // namespace

namespace {

// Round tick spacing (1, 2 or 5 x 10^k) giving the number of intervals over [lo, hi] nearest `n`.
double nice_step(double lo, double hi, int n) {
    const double raw = (hi - lo) / n;
    if (!(raw > 0) || !std::isfinite(raw)) return 1.0;
    const double mag = std::pow(10.0, std::floor(std::log10(raw)));
    double best = mag, best_err = 1e300;
    for (double m : {1.0, 2.0, 5.0, 10.0}) {
        const double err = std::fabs((hi - lo) / (m * mag) - n);
        if (err < best_err) best = m * mag, best_err = err;
    }
    return best;
}

// SVG text: the few characters XML reserves, escaped.
std::string xml(const std::string& s) {
    std::string out;
    for (char c : s) {
        if (c == '<')
            out += "&lt;";
        else if (c == '>')
            out += "&gt;";
        else if (c == '&')
            out += "&amp;";
        else
            out += c;
    }
    return out;
}

}  // namespace

std::string svg_panel(const std::vector<SvgSeries>& series, const std::string& title,
                      const std::string& xlabel, double x0, double y0, double w, double h,
                      bool log_y) {
    double xmin = 1e300, xmax = -1e300, ymin = 1e300, ymax = -1e300;
    auto yv = [&](double v) { return log_y ? std::log10(std::max(v, 1e-30)) : v; };
    for (const Series& s : series) {
        for (auto [x, y] : s.pts) {
            xmin = std::min(xmin, x), xmax = std::max(xmax, x);
            ymin = std::min(ymin, yv(y)), ymax = std::max(ymax, yv(y));
        }
    }
    std::string out =
        fmt::format(R"(<g><rect x="{}" y="{}" width="{}" height="{}" fill="white" stroke="#999"/>)"
                    R"(<text x="{}" y="{}" font-size="14" font-family="sans-serif">{}</text>)",
                    x0, y0, w, h, x0 + 6, y0 - 6, xml(title));
    if (xmax <= xmin) xmax = xmin + 1;
    if (ymax <= ymin) ymax = ymin + 1;
    // The legend: a strip of "— name" entries across the top of the panel, wrapped into rows, so
    // it never covers the data nor runs off the edge (~6.2 px a character at 11 px).
    struct Entry {
        const Series* s;
        double x, y;
    };
    std::vector<Entry> legend;
    double lx = x0 + 40, ly = y0 + 16;
    for (const Series& s : series) {
        if (s.pts.empty()) continue;
        const double ew = 6.2 * static_cast<double>(s.name.size()) + 34;
        if (lx + ew > x0 + w - 10 && lx > x0 + 40) lx = x0 + 40, ly += 14;
        legend.push_back({&s, lx, ly});
        lx += ew;
    }
    const double top = legend.empty() ? y0 + 10 : ly + 8;  // the plot area starts below it
    const double bottom = y0 + h - 20;
    // Round y ticks (linear axes extend to the enclosing ticks); log axes tick at decades' spans.
    double ystep = (ymax - ymin) / 4;
    if (!log_y) {
        ystep = nice_step(ymin, ymax, 4);
        ymin = std::floor(ymin / ystep + 1e-9) * ystep;
        ymax = std::ceil(ymax / ystep - 1e-9) * ystep;
        if (ymax <= ymin) ymax = ymin + ystep;
    }
    auto px = [&](double x) { return x0 + 40 + (x - xmin) / (xmax - xmin) * (w - 50); };
    auto py_raw = [&](double t) { return bottom - (t - ymin) / (ymax - ymin) * (bottom - top); };
    auto py = [&](double y) { return py_raw(yv(y)); };
    for (double t = ymin; t <= ymax + 1e-9 * ystep; t += ystep) {
        const double yy = py_raw(t);
        out += fmt::format(R"(<line x1="{}" y1="{:.1f}" x2="{}" y2="{:.1f}" stroke="#eee"/>)"
                           R"(<text x="{}" y="{:.1f}" font-size="10" text-anchor="end" )"
                           R"(font-family="sans-serif">{:.4g}</text>)",
                           x0 + 40, yy, x0 + w - 10, yy, x0 + 36, yy + 3,
                           log_y ? std::pow(10.0, t) : (std::fabs(t) < 1e-12 * ystep ? 0.0 : t));
    }
    // x ticks at round values, labelled, and the axis name centred under them.
    const double step = nice_step(xmin, xmax, 6);
    for (double t = std::ceil(xmin / step - 1e-9) * step; t <= xmax + 1e-9 * step; t += step) {
        out += fmt::format(R"(<line x1="{:.1f}" y1="{}" x2="{:.1f}" y2="{}" stroke="#999"/>)"
                           R"(<text x="{:.1f}" y="{}" font-size="10" text-anchor="middle" )"
                           R"(font-family="sans-serif">{:.4g}</text>)",
                           px(t), bottom, px(t), bottom + 4, px(t), y0 + h - 6, t);
    }
    out += fmt::format(R"(<text x="{:.1f}" y="{}" font-size="10" text-anchor="middle" fill="#555" )"
                       R"(font-family="sans-serif">{}</text>)",
                       x0 + w / 2, y0 + h + 10, xml(xlabel));
    for (const Entry& e : legend) {
        out += fmt::format(
            R"(<line x1="{:.1f}" y1="{:.1f}" x2="{:.1f}" y2="{:.1f}" stroke="{}" )"
            R"(stroke-width="2"/><text x="{:.1f}" y="{:.1f}" font-size="11" fill="#333" )"
            R"(font-family="sans-serif">{}</text>)",
            e.x, e.y - 4, e.x + 18, e.y - 4, e.s->color, e.x + 22, e.y, xml(e.s->name));
    }
    for (const Series& s : series) {
        if (s.pts.empty()) continue;
        for (auto [x, y] : s.pts) {
            if (s.pts.size() > 64) break;
            out += fmt::format(R"(<circle cx="{:.1f}" cy="{:.1f}" r="2" fill="{}"/>)", px(x), py(y),
                               s.color);
        }
        std::string d;
        for (auto [x, y] : s.pts)
            d += fmt::format("{}{:.1f},{:.1f} ", d.empty() ? "M" : "L", px(x), py(y));
        out +=
            fmt::format(R"(<path d="{}" fill="none" stroke="{}" stroke-width="1.5"/>)", d, s.color);
    }
    return out + "</g>";
}

int run_plot(const PlotOptions& o) {
    auto cols = read_metrics(o.metrics);
    ZS_CHECK_T(IoError, cols.count("loss"), "{}: no 'loss' values to plot", o.metrics);
    const double W = 900, H = 230;
    // MoE runs: a fourth panel, each expert's share of the routed tokens per step (load_e<i>
    // columns), where routing collapse shows as lines parting.
    std::vector<Series> load;
    static const char* const kColors[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                          "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
    for (int e = 0; cols.count(fmt::format("load_e{}", e)); ++e) {
        load.push_back(
            {fmt::format("expert {}", e), kColors[e % 10], cols[fmt::format("load_e{}", e)]});
    }
    const int panels = load.empty() ? 3 : 4;
    std::string svg = fmt::format(
        R"(<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}">)", W, panels * H + 40);
    svg += R"(<rect width="100%" height="100%" fill="#fafafa"/>)";
    svg += svg_panel(
        {{"train loss", "#1f77b4", cols["loss"]}, {"validation loss", "#d62728", cols["val_loss"]}},
        "loss", "step", 10, 30, W - 20, H - 30, false);
    svg += svg_panel({{"learning rate", "#2ca02c", cols["lr"]}}, "learning rate", "step", 10,
                     H + 30, W - 20, H - 30, false);
    svg += svg_panel({{"tokens/s", "#9467bd", cols["tokens_per_s"]}}, "throughput", "step", 10,
                     2 * H + 30, W - 20, H - 30, false);
    if (!load.empty()) {
        svg += svg_panel(load, "expert load (share of routed tokens)", "step", 10, 3 * H + 30,
                         W - 20, H - 30, false);
    }
    svg += "</svg>\n";
    io::write_file_atomic(o.output, svg);
    std::printf("wrote %s (%zu steps)\n", o.output.c_str(), cols["loss"].size());
    return 0;
}

}  // namespace zs::cli
