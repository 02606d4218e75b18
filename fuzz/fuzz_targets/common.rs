//! A strict reader of the Prometheus text exposition format 0.0.4, for the
//! fuzz targets: what patienced writes must read back under the format's
//! own rules, label values unescaped exactly.

/// One sample line: metric name, labels (unescaped), value.
pub type Sample = (String, Vec<(String, String)>, f64);

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Reads a label value that starts after its opening quote; returns the
/// value and the rest after the closing quote. Only `\\`, `\"` and `\n` are
/// escapes; a raw line feed cannot occur (the text is split on them).
pub fn unescape(s: &str) -> Result<(String, &str), String> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, &s[i + 1..])),
            '\\' => match chars.next() {
                Some((_, '\\')) => out.push('\\'),
                Some((_, '"')) => out.push('"'),
                Some((_, 'n')) => out.push('\n'),
                other => return Err(format!("bad escape {other:?} in {s:?}")),
            },
            c => out.push(c),
        }
    }
    Err(format!("unterminated label value {s:?}"))
}

fn value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse().map_err(|_| format!("bad value {s:?}")),
    }
}

/// Parses a whole exposition, or says which line is wrong.
pub fn parse(text: &str) -> Result<Vec<Sample>, String> {
    let body = text.strip_suffix('\n').ok_or("no final line feed")?;
    let mut samples = Vec::new();
    for line in body.split('\n') {
        if let Some(rest) = line.strip_prefix("# ") {
            let (kind, rest) = rest.split_once(' ').ok_or(format!("bad comment {line:?}"))?;
            let (name, what) = rest.split_once(' ').ok_or(format!("bad comment {line:?}"))?;
            if !is_name(name) {
                return Err(format!("bad name in {line:?}"));
            }
            match kind {
                "HELP" => {}
                "TYPE" if ["counter", "gauge", "histogram", "summary", "untyped"].contains(&what) => {}
                _ => return Err(format!("bad comment {line:?}")),
            }
            continue;
        }
        let name_end = line.find(['{', ' ']).ok_or(format!("no value in {line:?}"))?;
        let name = &line[..name_end];
        if !is_name(name) {
            return Err(format!("bad metric name in {line:?}"));
        }
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if let Some(mut r) = rest.strip_prefix('{') {
            loop {
                if let Some(after) = r.strip_prefix('}') {
                    r = after;
                    break;
                }
                let (label, after) = r.split_once("=\"").ok_or(format!("bad label in {line:?}"))?;
                if !is_name(label) || label.contains(':') {
                    return Err(format!("bad label name in {line:?}"));
                }
                let (v, after) = unescape(after)?;
                labels.push((label.to_string(), v));
                r = after.strip_prefix(',').unwrap_or(after);
                if !after.starts_with(',') && !after.starts_with('}') {
                    return Err(format!("bad label list in {line:?}"));
                }
            }
            rest = r;
        }
        let rest = rest.strip_prefix(' ').ok_or(format!("no value in {line:?}"))?;
        let mut fields = rest.split(' ');
        let v = value(fields.next().unwrap_or(""))?;
        if let Some(ts) = fields.next() {
            ts.parse::<i64>()
                .map_err(|_| format!("bad timestamp in {line:?}"))?;
        }
        if fields.next().is_some() {
            return Err(format!("trailing fields in {line:?}"));
        }
        samples.push((name.to_string(), labels, v));
    }
    Ok(samples)
}

/// Checks what patienced renders for the events it took in: the text
/// parses, every `command` label is one of `names`, and every histogram's
/// `+Inf` bucket equals its `_count`.
pub fn check_render(agg: &patience::daemon::aggregate::Aggregate, names: &[&str]) {
    let text = patience::daemon::exposition::render(agg, 1.0e9);
    let samples = parse(&text).unwrap_or_else(|e| panic!("exposition does not parse: {e}\n{text}"));
    let mut inf = Vec::new();
    let mut counts = Vec::new();
    for (metric, labels, v) in &samples {
        for (label, value) in labels {
            if label == "command" {
                assert!(names.contains(&value.as_str()), "{value:?} is none of {names:?}");
            }
        }
        if metric.ends_with("_bucket") && labels.iter().any(|(l, v)| l == "le" && v == "+Inf") {
            inf.push((
                metric.trim_end_matches("_bucket").to_string(),
                labels[0].1.clone(),
                *v,
            ));
        }
        if let Some(base) = metric.strip_suffix("_count") {
            counts.push((base.to_string(), labels[0].1.clone(), *v));
        }
    }
    inf.sort_by(|a, b| a.partial_cmp(b).unwrap());
    counts.sort_by(|a, b| a.partial_cmp(b).unwrap());
    assert_eq!(inf, counts, "+Inf buckets and counts differ");
}
