//! The `access_log` section: destination, fields, sampling, buffer and rotation.

use crate::common::{errors_raw, has, BASE};
use steady_config::access_log::Field;
use steady_config::parse;

fn errors(yaml: &str) -> Vec<String> {
    errors_raw(&format!("{BASE}{yaml}"))
}

#[test]
fn fields_default_to_all_and_keep_the_listed_order() {
    let config = parse(
        &format!("{BASE}access_log: {{path: stdout}}\n"),
        "steady.yaml",
    )
    .unwrap();
    assert_eq!(config.access_log.unwrap().fields(), Field::ALL.to_vec());
    let config = parse(
        &format!("{BASE}access_log: {{fields: [status, path, time]}}\n"),
        "steady.yaml",
    )
    .unwrap();
    assert_eq!(
        config.access_log.unwrap().fields(),
        vec![Field::Status, Field::Path, Field::Time]
    );
}

#[test]
fn bad_values_are_located() {
    let e = errors("access_log: {sample: 150%, buffer: 0, path: \" \"}\n");
    has(&e, "access_log.sample");
    has(&e, "between 0% and 100%");
    has(&e, "at least 1 line");
    has(&e, "`stdout` or a file path");

    // A field listed twice would write a JSON key twice.
    let e = errors("access_log:\n  fields: [status, path, status]\n");
    has(&e, "access_log.fields");
    has(&e, "`status` is listed more than once");

    let e = errors("access_log: {rotate: {max_size: 0}}\n");
    has(&e, "applies only to a file `path`");
    has(&e, "`max_size` must be greater than 0");

    let e = errors("access_log: {fields: [status, pth]}\n");
    has(&e, "pth");
}
