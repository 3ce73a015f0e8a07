// zerospeed plan pipeline: a pipeline schedule generated, validated and simulated on paper from
// F/B/W costs (parallel/pipeline_schedule.h) — each rank's instruction list, its peak held
// activations against the policy's bound, the step's bubble against the closed form, a timeline
// SVG, and a sweep of the bubble over 8..64 stages for planning past one machine.
#include <cstdio>
#include <fstream>

#include <fmt/format.h>

#include "base/error.h"
#include "cli/commands.h"
#include "cli/svg.h"
#include "parallel/pipeline_schedule.h"

namespace zs::cli {

namespace {

using parallel::PipeCosts;
using parallel::PipeOp;
using parallel::PipePolicy;
using parallel::PipeSchedule;
using parallel::PipeTimeline;

const char* color_of(PipeOp op) {
    switch (op) {
        case PipeOp::forward:
            return "#4e79a7";
        case PipeOp::backward:
            return "#59a14f";
        case PipeOp::backward_input:
            return "#8cd17d";
        case PipeOp::backward_weight:
            return "#f28e2b";
        default:
            return "#bab0ac";
    }
}

}  // namespace

std::string pipeline_timeline_svg(int stages, const PipeTimeline& tl, const std::string& title,
                                  const std::string& time_unit) {
    const double W = 1100, row = 26, left = 70, top = 40;
    const double H = top + row * stages + 65;
    const double scale = tl.makespan > 0 ? (W - left - 20) / tl.makespan : 1.0;
    std::string svg = fmt::format(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" "
        "font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" "
        "fill=\"white\"/>\n<text x=\"{}\" y=\"20\" font-size=\"14\">{}</text>\n",
        W, H, left, title);
    for (int r = 0; r < stages; ++r) {
        svg += fmt::format("<text x=\"8\" y=\"{:.1f}\">rank {}</text>\n", top + r * row + 17, r);
    }
    for (const parallel::PipeSpan& sp : tl.spans) {
        const double x = left + sp.start * scale, w = (sp.end - sp.start) * scale;
        const double y = top + sp.rank * row;
        svg += fmt::format(
            "<rect x=\"{:.2f}\" y=\"{:.1f}\" width=\"{:.2f}\" height=\"{:.1f}\" fill=\"{}\" "
            "stroke=\"white\" stroke-width=\"0.5\"><title>{}</title></rect>\n",
            x, y, w, row - 4, color_of(sp.instr.op), parallel::to_string(sp.instr));
        if (w >= 14) {
            svg += fmt::format(
                "<text x=\"{:.2f}\" y=\"{:.1f}\" fill=\"white\" font-size=\"10\" "
                "text-anchor=\"middle\">{}</text>\n",
                x + w / 2, y + 15, sp.instr.mb);
        }
    }
    const double ly = top + row * stages + 25;
    double lx = left;
    for (PipeOp op :
         {PipeOp::forward, PipeOp::backward, PipeOp::backward_input, PipeOp::backward_weight}) {
        svg += fmt::format(
            "<rect x=\"{}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{}\"/>"
            "<text x=\"{}\" y=\"{}\">{}</text>\n",
            lx, ly - 10, color_of(op), lx + 16, ly, parallel::to_string(op));
        lx += 150;
    }
    svg += fmt::format("<text x=\"{}\" y=\"{}\">time: 0 to {:.4g} {}</text>\n", left, ly + 22,
                       tl.makespan, time_unit);
    svg += "</svg>\n";
    return svg;
}

int run_plan_pipeline(const PlanPipelineOptions& o) {
    const PipePolicy policy = parallel::parse_pipe_policy(o.policy, "--policy");
    const PipeCosts costs{o.f, o.b, o.w, o.comm};
    const PipeSchedule s =
        parallel::make_pipe_schedule(policy, o.stages, o.micro_batches, o.chunks, costs);
    const parallel::PipeCheck check = parallel::validate(s);
    const PipeTimeline tl = parallel::simulate(s, costs);
    std::printf(
        "pipeline plan: %s, %d stages x %d micro-batches%s (costs F %g B %g W %g, "
        "transfer %g)\n",
        parallel::to_string(policy), o.stages, o.micro_batches,
        o.chunks > 1 ? fmt::format(", {} chunks per rank", o.chunks).c_str() : "", o.f, o.b, o.w,
        o.comm);
    for (int r = 0; r < s.stages; ++r) {
        std::string line;
        if (o.show) {
            for (const parallel::PipeInstr& i : s.by_rank[static_cast<size_t>(r)]) {
                if (i.op == PipeOp::forward || i.op == PipeOp::backward ||
                    i.op == PipeOp::backward_input || i.op == PipeOp::backward_weight) {
                    line.append(" ").append(parallel::to_string(i));
                }
            }
        }
        std::printf("rank %d: held activations %d (bound %d), span %.4g, bubble %.1f%%%s%s\n", r,
                    check.peak_held[static_cast<size_t>(r)],
                    parallel::pipe_memory_bound(policy, s.stages, s.micro_batches, s.chunks, r),
                    tl.span(r), 100.0 * tl.bubble(r), o.show ? "\n  " : "", line.c_str());
    }
    double work = 0;
    for (double b : tl.busy) work = std::max(work, b);
    std::printf("step: makespan %.4g, period %.4g, work per rank %.4g; bubble %.2f%%", tl.makespan,
                tl.period(), work, 100.0 * tl.bubble());
    if (policy == PipePolicy::gpipe || policy == PipePolicy::one_f_one_b ||
        policy == PipePolicy::interleaved) {
        std::printf(" (theory (p-1)/(Vm+p-1) = %.2f%%)",
                    100.0 * parallel::pipe_theory_bubble(s.stages, s.micro_batches, s.chunks));
    }
    std::printf("\n");
    if (!o.svg.empty()) {
        std::ofstream f(o.svg);
        f << pipeline_timeline_svg(s.stages, tl,
                                   fmt::format("{}: {} stages x {} micro-batches, bubble {:.1f}%",
                                               parallel::to_string(policy), s.stages,
                                               s.micro_batches, 100.0 * tl.bubble()),
                                   "cost units");
        if (!f) throw Error(fmt::format("--svg: cannot write '{}'", o.svg));
        std::printf("timeline: %s\n", o.svg.c_str());
    }
    if (o.sweep) {
        std::printf("\nbubble by stages, %g micro-batches per stage as above (same costs):\n",
                    static_cast<double>(o.micro_batches) / o.stages);
        std::printf("%8s %10s %10s %12s %10s %10s\n", "stages", "gpipe", "1f1b", "interleaved",
                    "zb-h1", "zb-h2");
        for (int P : {8, 16, 32, 64}) {
            const int M = std::max(1, o.micro_batches * P / o.stages);
            std::printf("%8d", P);
            for (PipePolicy p : {PipePolicy::gpipe, PipePolicy::one_f_one_b,
                                 PipePolicy::interleaved, PipePolicy::zb_h1, PipePolicy::zb_h2}) {
                const int V = p == PipePolicy::interleaved ? 2 : 1;
                const PipeSchedule q = parallel::make_pipe_schedule(p, P, M, V, costs);
                std::printf(p == PipePolicy::interleaved ? " %11.2f%%" : " %9.2f%%",
                            100.0 * parallel::simulate(q, costs).bubble());
            }
            std::printf("\n");
        }
    }
    return 0;
}

}  // namespace zs::cli
