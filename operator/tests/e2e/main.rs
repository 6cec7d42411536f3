//! End-to-end suite: the operator (and, where data must flow, the collector) as real processes
//! against a real kube-apiserver + kube-controller-manager built from Go modules.
//!
//! Every test is `#[ignore]`: plain `cargo test` skips them. `make e2e` (e2e/scripts/run-e2e.sh)
//! brings a fresh control plane up, runs them with `--ignored --test-threads=1` and
//! `KUBECONFIG` set, and tears the control plane down afterwards. To run them by hand:
//! `eval "$(e2e/scripts/cluster.sh up)"` then
//! `cargo test -p unified-connectors --test e2e -- --ignored --test-threads=1 [filter]`.

mod support;

mod chart_upgrade;
mod install;
mod isolation;
mod leadership;

mod step1_crds;
mod step2_validation;
mod step3_sharing;
mod step4_credentials;
mod step5_rotation;
mod step6_dataflow;
mod step7_kstatus;
mod step8_restart;
