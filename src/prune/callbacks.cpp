#include "nnopt/prune/callbacks.h"

#include <nlohmann/json.hpp>

#include "nnopt/core/error.h"

namespace nnopt {
using json = nlohmann::json;

// ---------------------------------------------------------------- BnL1Callback

BnL1Callback::BnL1Callback(double lambda) : lambda_(lambda) {
  NNOPT_CHECK(lambda >= 0, ValueError, "bn L1 penalty lambda must be >= 0, got ", lambda);
}

void BnL1Callback::on_after_backward(TrainState& st) {
  torch::NoGradGuard ng;
  double total = 0;
  for (const auto& n : st.model->graph().nodes()) {
    if (n.op != OpKind::kBatchNorm) continue;
    auto& m = st.model->node_module(n.name);
    if (!m.weight.defined()) continue;
    total += m.weight.abs().sum().item<double>();
    auto& g = m.weight.mutable_grad();
    if (g.defined()) g.add_(m.weight.sign(), lambda_);
  }
  st.step_terms["bn_l1"] = lambda_ * total;
}

// ---------------------------------------------------------------- UnstructuredPruneCallback

UnstructuredPruneCallback::UnstructuredPruneCallback(GraphModule model, PruneSchedule schedule, bool global)
    : schedule_(std::move(schedule)), global_(global) {
  schedule_.validate();
  NNOPT_CHECK(schedule_.kind() != "sfp", ValueError,
              "schedule 'sfp' re-selects filters; use it with channel pruning");
  MaskMap ones;
  auto have = current_masks(model);
  for (const auto& n : prunable_weights(model->graph()))
    if (!have.count(n)) ones[n] = torch::ones_like(model->node_module(n).weight, torch::kBool);
  apply_masks(model, ones);
}

bool UnstructuredPruneCallback::on_batch_begin(TrainState& st) {
  double s = schedule_.at(st.global_step);
  if (s > current_) {
    apply_masks(st.model, magnitude_masks(st.model, s, global_));
    current_ = s;
  }
  return true;
}

void UnstructuredPruneCallback::on_epoch_end(TrainState& st, EpochMetrics& m) {
  m.extra["weight_sparsity"] = weight_sparsity(st.model);
}

std::string UnstructuredPruneCallback::state_json() const { return json{{"sparsity", current_}}.dump(); }

void UnstructuredPruneCallback::load_state_json(const std::string& s) {
  current_ = json::parse(s).value("sparsity", 0.0);
}

// ---------------------------------------------------------------- ChannelPruneCallback

ChannelPruneCallback::ChannelPruneCallback(GraphModule model, ImportancePtr importance, ImportanceData data,
                                           PruneSchedule schedule, TargetKind metric,
                                           ChannelPlannerOptions planner)
    : deps_(model->graph()),
      importance_(std::move(importance)),
      data_(std::move(data)),
      schedule_(std::move(schedule)),
      metric_(metric),
      planner_(planner) {
  schedule_.validate();
  planner_.validate();
  NNOPT_CHECK(importance_ != nullptr, ValueError, "channel pruning callback: no criterion");
  NNOPT_CHECK(metric_ != TargetKind::kLatency, ValueError,
              "channel pruning callback: convert a latency budget to a MAC fraction first");
  NNOPT_CHECK(!importance_->needs_data() || !data_.empty(), ValueError, "criterion '",
              importance_->name(), "' needs data");
}

void ChannelPruneCallback::replan(GraphModule& model, double value, bool keep_previous) {
  auto scores = importance_->score(model, deps_, data_);
  if (keep_previous) {
    // Scores are >= 0: channels already removed rank first and stay removed.
    for (const auto& [g, idx] : plan_.remove) {
      auto& s = scores[deps_.group_index(g)];
      for (auto u : idx) s[u] = -1.0;
    }
  }
  PruneTarget t;
  t.kind = metric_;
  t.value = value;
  ChannelSolution sol = solve_channel_target(deps_, scores, t, planner_);
  if (keep_previous) {  // union with what is already gone, when that stays a valid plan
    ChannelPlan u = sol.plan;
    for (const auto& [g, idx] : plan_.remove) {
      auto& v = u.remove[g];
      v.insert(v.end(), idx.begin(), idx.end());
      std::sort(v.begin(), v.end());
      v.erase(std::unique(v.begin(), v.end()), v.end());
    }
    try {
      check_plan(deps_, u);
      sol.plan = u;
    } catch (const ValueError&) {
    }
  }
  plan_ = sol.plan;
  achieved_ = plan_metric(deps_, plan_, metric_, planner_);
  zero_channels(model, deps_, plan_);
}

bool ChannelPruneCallback::on_batch_begin(TrainState& st) {
  if (schedule_.kind() == "sfp") return true;
  double v = schedule_.at(st.global_step);
  if (v > current_) {
    replan(st.model, v, true);
    current_ = v;
  }
  return true;
}

void ChannelPruneCallback::on_batch_end(TrainState& st) {
  if (schedule_.kind() != "sfp" && plan_.count() > 0) zero_channels(st.model, deps_, plan_);
}

void ChannelPruneCallback::on_epoch_end(TrainState& st, EpochMetrics& m) {
  if (schedule_.kind() == "sfp") {
    current_ = schedule_.at(st.global_step);
    replan(st.model, current_, false);  // soft: a fresh choice every epoch
  }
  m.extra["pruned_channels"] = static_cast<double>(plan_.count());
  m.extra["pruned_fraction"] = achieved_;
}

std::string ChannelPruneCallback::state_json() const {
  return json{{"value", current_}, {"plan", json::parse(plan_.to_json())}}.dump();
}

void ChannelPruneCallback::load_state_json(const std::string& s) {
  json j = json::parse(s);
  current_ = j.value("value", 0.0);
  if (j.contains("plan")) plan_ = ChannelPlan::from_json(j["plan"].dump());
}

}  // namespace nnopt
