// svg_panel read as a person reads it: every legend entry inside the panel and clear of the data,
// the x axis labelled at several round values, the y grid at round values. The estimates of
// text width use the same 6.2 px a character (11 px sans-serif) a renderer gives on average.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "cli/svg.h"

namespace zs::cli {
namespace {

struct Text {
    double x, y;
    std::string anchor, body;
};

// The value of attribute `name` inside one element's text, "" when absent.
std::string attr(const std::string& el, const std::string& name) {
    const std::string key = " " + name + "=\"";
    const size_t p = el.find(key);
    if (p == std::string::npos) return {};
    const size_t b = p + key.size();
    return el.substr(b, el.find('"', b) - b);
}

// Every <text> element with this font size (string scanning: no std::regex, whose libstdc++ 12
// code trips -Wmaybe-uninitialized under the sanitizer build).
std::vector<Text> texts(const std::string& svg, const std::string& font_size) {
    std::vector<Text> out;
    for (size_t p = svg.find("<text "); p != std::string::npos; p = svg.find("<text ", p + 1)) {
        const size_t close = svg.find('>', p), end = svg.find("</text>", p);
        const std::string el = svg.substr(p, close - p);
        if (attr(el, "font-size") != font_size) continue;
        const std::string anchor = attr(el, "text-anchor");
        out.push_back({std::stod(attr(el, "x")), std::stod(attr(el, "y")),
                       anchor.empty() ? "start" : anchor, svg.substr(close + 1, end - close - 1)});
    }
    return out;
}

std::vector<double> circle_ys(const std::string& svg) {
    std::vector<double> ys;
    for (size_t p = svg.find("<circle "); p != std::string::npos; p = svg.find("<circle ", p + 1)) {
        ys.push_back(std::stod(attr(svg.substr(p, svg.find('>', p) - p), "cy")));
    }
    return ys;
}

bool round_value(double v) {
    if (v == 0) return true;
    const double mag = std::pow(10.0, std::floor(std::log10(std::fabs(v))));
    const double m = v / mag;  // a leading digit and at most one more
    return std::fabs(m * 10 - std::round(m * 10)) < 1e-6;
}

TEST(SvgPanel, LegendInsideAndClearOfTheDataTicksRound) {
    const double x0 = 10, y0 = 30, w = 740, h = 240;
    std::vector<SvgSeries> s = {{"zerospeed-prefill-first p99", "#1f77b4", {}},
                                {"zerospeed-splitfuse-with-a-long-name p99", "#d62728", {}},
                                {"llama.cpp-server p99", "#2ca02c", {}}};
    for (int i = 0; i < 5; ++i) {
        const double x = 37.3 * std::pow(1.7, i);
        s[0].pts.emplace_back(x, 21.7 + 13.1 * i);
        s[1].pts.emplace_back(x * 1.1, 24.2 + 15.9 * i);
        s[2].pts.emplace_back(x * 0.8, 19.4 + 14.3 * i);  // the highest point at the right edge
    }
    const std::string svg = svg_panel(s, "p99 time per token", "tokens/s", x0, y0, w, h, false);

    const std::vector<Text> legend = texts(svg, "11");
    ASSERT_EQ(legend.size(), 3u) << svg;
    const std::vector<double> ys = circle_ys(svg);
    ASSERT_EQ(ys.size(), 15u);
    const double data_top = *std::min_element(ys.begin(), ys.end());
    for (const Text& t : legend) {
        const double width = 6.2 * static_cast<double>(t.body.size());
        const double left = t.anchor == "end"      ? t.x - width
                            : t.anchor == "middle" ? t.x - width / 2
                                                   : t.x;
        EXPECT_GE(left, x0) << t.body;
        EXPECT_LE(left + width, x0 + w) << t.body << " runs off the right edge";
        EXPECT_LT(t.y + 3, data_top) << t.body << " overlaps the data";
    }

    // Small labels: y grid (anchored end, left of the plot) and x ticks (anchored middle).
    int xticks = 0, yticks = 0;
    for (const Text& t : texts(svg, "10")) {
        if (t.body == "tokens/s") continue;
        const double v = std::stod(t.body);
        EXPECT_TRUE(round_value(v)) << "tick label " << t.body;
        if (t.anchor == "middle") ++xticks;
        if (t.anchor == "end") ++yticks;
    }
    EXPECT_GE(xticks, 4) << "x axis labelled at its two ends only";
    EXPECT_GE(yticks, 3);
}

}  // namespace
}  // namespace zs::cli
