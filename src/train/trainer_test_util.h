// Comparisons the training tests share: a parallel run's steps against the single rank's, and
// an exported HF model's tensors against a reference export.
#pragma once

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "io/safetensors.h"
#include "train/trainer.h"

namespace zs::train {

// Every step's loss within 1e-5 relative of `want`'s (the worst difference reported once) and
// its gradient norm within `norm_tol` relative. `at` names the run (and rank) in messages.
inline void expect_steps_match(const std::vector<StepStats>& got,
                               const std::vector<StepStats>& want, double norm_tol,
                               const std::string& at) {
    ASSERT_EQ(got.size(), want.size()) << at;
    double worst = 0;
    for (size_t i = 0; i < got.size(); ++i) {
        worst = std::max(worst, std::fabs(got[i].loss - want[i].loss) / want[i].loss);
        EXPECT_NEAR(got[i].grad_norm, want[i].grad_norm, norm_tol * want[i].grad_norm)
            << at << " step " << i + 1;
    }
    EXPECT_LE(worst, 1e-5) << at;
}

// Two model.safetensors files hold the same tensors, each within `tol` relative (L2) of the
// reference's.
inline void expect_safetensors_close(const std::string& want_file, const std::string& got_file,
                                     double tol, const std::string& at) {
    io::SafetensorsFile w = io::SafetensorsFile::open(want_file);
    io::SafetensorsFile g = io::SafetensorsFile::open(got_file);
    ASSERT_EQ(g.tensors().size(), w.tensors().size()) << at;
    for (const io::SafetensorsTensorInfo& info : w.tensors()) {
        core::Tensor a = w.tensor(info.name).contiguous(), b = g.tensor(info.name).contiguous();
        ASSERT_EQ(a.shape(), b.shape()) << at << " " << info.name;
        double d = 0, n = 0;
        for (int64_t k = 0; k < a.numel(); ++k) {
            const double x = a.data<float>()[k], y = b.data<float>()[k];
            d += (x - y) * (x - y);
            n += x * x;
        }
        EXPECT_LE(std::sqrt(d / std::max(n, 1e-30)), tol) << at << " " << info.name;
    }
}

}  // namespace zs::train
