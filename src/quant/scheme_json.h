#pragma once
// A quantization scheme as JSON (the scheme keys of a scale-table record:
// bits, signed, symmetric, per_channel, ch_axis, narrow_range, quant_min,
// quant_max). Private to src/quant: keeps nlohmann/json out of public headers.
#include <nlohmann/json.hpp>

#include <string>

#include "nnopt/quant/scheme.h"

namespace nnopt {

nlohmann::json scheme_to_json(const QuantScheme& s);
/// Reads the scheme keys of `j` (other keys are the caller's to check); quant_min
/// and quant_max, when present, must match. ValueError "WHAT: ..." otherwise.
QuantScheme scheme_from_json(const nlohmann::json& j, const std::string& what);

}  // namespace nnopt
