// Devices: where a Buffer's bytes live.
#pragma once

#include <string>

namespace zs::core {

enum class DeviceType : unsigned char { cpu, cuda };
inline constexpr int kNumDeviceTypes = 2;

const char* to_string(DeviceType t);

struct Device {
    DeviceType type = DeviceType::cpu;
    int index = 0;

    static Device cpu() { return {DeviceType::cpu, 0}; }
    static Device cuda(int i = 0) { return {DeviceType::cuda, i}; }
    bool is_cpu() const { return type == DeviceType::cpu; }
    bool is_cuda() const { return type == DeviceType::cuda; }
    bool operator==(const Device& o) const = default;
    // "cpu", "cuda:0"
    std::string str() const;
};

}  // namespace zs::core
