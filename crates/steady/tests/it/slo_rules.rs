//! `steady slo rules`: the generated file passes `promtool check rules`, and
//! `promtool test rules` shows its alerts fire (and stay quiet) as the in-process
//! engine's would, on synthetic counters of a two-instance fleet.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_steady");

const CONFIG: &str = "\
listeners: [{name: web, bind: '127.0.0.1:8080'}]
routes: [{name: checkout, listener: web, upstream: app}]
upstreams: [{name: app, endpoints: [{address: '127.0.0.1:9001'}]}]
slos:
  - name: checkout-availability
    description: Checkout answers without server errors.
    routes: [checkout]
    objective: 99.9%
  - name: checkout-latency
    routes: [checkout]
    objective: 99%
    sli: {latency_below: 300ms}
alerts:
  page: {severity: critical, labels: {team: payments}}
";

/// Labels every alert of `checkout-availability` carries, besides severity's.
const AVAILABILITY: &str = "slo: checkout-availability, sloth_id: steady-checkout-availability, sloth_service: steady, sloth_slo: checkout-availability";

fn workdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("steady-slo-rules-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn promtool() -> PathBuf {
    let path = Path::new("/usr/bin/promtool");
    if path.exists() {
        return path.to_path_buf();
    }
    match Command::new("promtool").arg("--version").output() {
        Ok(out) if out.status.success() => PathBuf::from("promtool"),
        _ => panic!(
            "promtool not found: install Debian's `prometheus` package (`apt-get install prometheus`), which ships /usr/bin/promtool"
        ),
    }
}

fn rules_for(dir: &Path, config: &str) -> Output {
    let path = dir.join("steady.yaml");
    std::fs::write(&path, config).unwrap();
    Command::new(BIN)
        .args(["slo", "rules", "-c"])
        .arg(&path)
        .output()
        .unwrap()
}

fn show(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A counter pair for `slo` on `instance`: `per_min` events a minute, `bad_per_min`
/// of them bad, sampled every minute for `minutes`.
fn series(slo: &str, instance: &str, per_min: u32, bad_per_min: u32, minutes: u32) -> String {
    format!(
        "      - series: 'steady_slo_events_total{{slo=\"{slo}\",instance=\"{instance}\"}}'\n        values: '0+{per_min}x{minutes}'\n      - series: 'steady_slo_bad_events_total{{slo=\"{slo}\",instance=\"{instance}\"}}'\n        values: '0+{bad_per_min}x{minutes}'\n"
    )
}

fn unit_tests() -> String {
    let page_annotations = "exp_annotations: {title: '(page) steady checkout-availability SLO error budget burn rate is too fast.', summary: 'steady checkout-availability SLO error budget burn rate is over expected.', description: 'Checkout answers without server errors.'}";
    let ticket_annotations = "exp_annotations: {title: '(ticket) steady checkout-availability SLO error budget burn rate is too fast.', summary: 'steady checkout-availability SLO error budget burn rate is over expected.', description: 'Checkout answers without server errors.'}";
    let id = "sloth_id=\"steady-checkout-availability\", sloth_service=\"steady\", sloth_slo=\"checkout-availability\"";
    let mut t = String::from("rule_files: [rules.yaml]\nevaluation_interval: 1m\ntests:\n");
    // 2% of the fleet's requests fail (4% on one instance, none on the other):
    // burn rate 20 > 14.4 over 1h and 5m, so the page fires at once. The latency SLO
    // of the same route is fine and stays quiet.
    t += "  - interval: 1m\n    input_series:\n";
    t += &series("checkout-availability", "a", 1000, 40, 60);
    t += &series("checkout-availability", "b", 1000, 0, 60);
    t += &series("checkout-latency", "a", 1000, 0, 60);
    t += &format!(
        "    alert_rule_test:
      - eval_time: 10m
        alertname: SteadySLOPageBurn
        exp_alerts:
          - exp_labels: {{severity: critical, sloth_severity: page, team: payments, sloth_window: 5m, {AVAILABILITY}}}
            {page_annotations}
    promql_expr_test:
      - expr: slo:sli_error:ratio_rate5m{{sloth_slo=\"checkout-availability\"}}
        eval_time: 10m
        exp_samples:
          - labels: 'slo:sli_error:ratio_rate5m{{{id}, sloth_window=\"5m\"}}'
            value: 0.02
      - expr: slo:sli_error:ratio_rate30d{{sloth_slo=\"checkout-availability\"}}
        eval_time: 10m
        exp_samples:
          - labels: 'slo:sli_error:ratio_rate30d{{{id}, sloth_window=\"30d\"}}'
            value: 0.02
      # The budget is 1 - 0.999 in floating point: 20 within rounding.
      - expr: round(slo:current_burn_rate:ratio{{sloth_slo=\"checkout-availability\"}}, 0.001)
        eval_time: 10m
        exp_samples:
          - labels: '{{{id}, sloth_window=\"5m\"}}'
            value: 20
      - expr: slo:sli_error:ratio_rate1h{{sloth_slo=\"checkout-latency\"}}
        eval_time: 30m
        exp_samples:
          - labels: 'slo:sli_error:ratio_rate1h{{sloth_id=\"steady-checkout-latency\", sloth_service=\"steady\", sloth_slo=\"checkout-latency\", sloth_window=\"1h\"}}'
            value: 0
"
    );
    // 0.1% errors: burn rate 1, which no rule exceeds.
    t += "  - interval: 1m\n    input_series:\n";
    t += &series("checkout-availability", "a", 1000, 1, 60);
    t += "    alert_rule_test:
      - eval_time: 1h
        alertname: SteadySLOPageBurn
        exp_alerts: []
      - eval_time: 1h
        alertname: SteadySLOTicketBurn
        exp_alerts: []
";
    // 0.4% errors for a day: burn rate 4 > 3 over 1d and 2h (and > 1 over 3d and
    // 6h), a ticket; below the page factors 14.4 and 6.
    t += "  - interval: 1m\n    input_series:\n";
    t += &series("checkout-availability", "a", 1000, 4, 1440);
    t += &format!(
        "    alert_rule_test:
      - eval_time: 1d
        alertname: SteadySLOTicketBurn
        exp_alerts:
          - exp_labels: {{severity: warning, sloth_severity: ticket, sloth_window: 2h, {AVAILABILITY}}}
            {ticket_annotations}
      - eval_time: 1d
        alertname: SteadySLOPageBurn
        exp_alerts: []
"
    );
    // Heavy errors on a nearly idle route: 50 requests in the hour, under
    // `min_events` (100), so nothing pages.
    t += "  - interval: 1m\n    input_series:\n";
    t += &series("checkout-availability", "a", 1, 1, 50);
    t += "    alert_rule_test:
      - eval_time: 50m
        alertname: SteadySLOPageBurn
        exp_alerts: []
";
    t
}

#[test]
fn generated_rules_pass_promtool_check_and_fire_like_the_engine() {
    let promtool = promtool();
    let dir = workdir("fleet");
    let out = rules_for(&dir, CONFIG);
    assert!(out.status.success(), "{}", show(&out));
    let rules = dir.join("rules.yaml");
    std::fs::write(&rules, &out.stdout).unwrap();

    let check = Command::new(&promtool)
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", show(&check));
    // Per SLO: 8 error ratios, 7 metadata rules, a page and a ticket alert.
    assert!(
        String::from_utf8_lossy(&check.stdout).contains("34 rules found"),
        "{}",
        show(&check)
    );

    let tests = dir.join("tests.yaml");
    std::fs::write(&tests, unit_tests()).unwrap();
    let test = Command::new(&promtool)
        .args(["test", "rules"])
        .arg(&tests)
        .output()
        .unwrap();
    assert!(test.status.success(), "{}", show(&test));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_config_without_slos_gives_an_empty_rule_file() {
    let dir = workdir("empty");
    let out = rules_for(
        &dir,
        "listeners: [{name: web, bind: '127.0.0.1:8080'}]\nroutes: [{name: r, listener: web, upstream: app}]\nupstreams: [{name: app, endpoints: [{address: '127.0.0.1:9001'}]}]\n",
    );
    assert!(out.status.success(), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.lines().any(|l| l == "groups: []"), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no `slos`"),
        "{}",
        show(&out)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_config_exits_1_with_located_errors() {
    let dir = workdir("bad");
    let out = rules_for(
        &dir,
        "listeners: [{name: web, bind: '127.0.0.1:8080'}]\nroutes: [{name: r, listener: web, upstream: app}]\nupstreams: [{name: app, endpoints: [{address: '127.0.0.1:9001'}]}]\nslos:\n  - name: api\n    routes: [r]\n    objective: 100%\n",
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(out.stdout.is_empty(), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("steady.yaml:7:") && err.contains("slos[0].objective"),
        "{}",
        show(&out)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
