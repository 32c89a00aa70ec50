//! Reads berth's own `/metrics` text back into numbers, so the console shows
//! exactly what a Prometheus scrape of the same moment would.

use std::collections::BTreeMap;

/// One sample line: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name (with `_bucket`, `_count`, `_sum`, `_total` suffixes).
    pub name: String,
    /// Label pairs.
    pub labels: BTreeMap<String, String>,
    /// The value.
    pub value: f64,
}

/// Every sample of a text-format exposition; comments and lines that do not
/// parse are skipped.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let (name, rest) = match line.find('{') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => {
            let (name, value) = line.split_once(' ')?;
            return Some(Sample {
                name: name.to_string(),
                labels: BTreeMap::new(),
                value: parse_value(value)?,
            });
        }
    };
    let mut labels = BTreeMap::new();
    let mut chars = rest.char_indices();
    let end;
    loop {
        // key
        let mut key = String::new();
        let mut closed = false;
        for (_, c) in chars.by_ref() {
            match c {
                '=' => break,
                '}' => {
                    closed = true;
                    break;
                }
                ',' | ' ' => {}
                c => key.push(c),
            }
        }
        if closed {
            end = rest.len() - chars.as_str().len();
            break;
        }
        if chars.next().map(|(_, c)| c) != Some('"') {
            return None;
        }
        let mut value = String::new();
        let mut escaped = false;
        loop {
            let (_, c) = chars.next()?;
            match (escaped, c) {
                (true, 'n') => {
                    value.push('\n');
                    escaped = false;
                }
                (true, c) => {
                    value.push(c);
                    escaped = false;
                }
                (false, '\\') => escaped = true,
                (false, '"') => break,
                (false, c) => value.push(c),
            }
        }
        labels.insert(key, value);
    }
    let value = rest[end..].trim().split(' ').next()?;
    Some(Sample {
        name: name.to_string(),
        labels,
        value: parse_value(value)?,
    })
}

fn parse_value(v: &str) -> Option<f64> {
    match v.trim() {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        v => v.parse().ok(),
    }
}

/// The sum of `name`'s samples whose labels include every pair of `with`.
pub fn sum(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name && matches(s, with))
        .map(|s| s.value)
        .sum()
}

/// Whether any sample of `name` with those labels exists.
pub fn has(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> bool {
    samples.iter().any(|s| s.name == name && matches(s, with))
}

fn matches(s: &Sample, with: &[(&str, &str)]) -> bool {
    with.iter()
        .all(|(k, v)| s.labels.get(*k).is_some_and(|x| x == v))
}

/// A histogram's cumulative buckets `(upper bound, count)`, by bound.
pub fn buckets(samples: &[Sample], histogram: &str, with: &[(&str, &str)]) -> Vec<(f64, f64)> {
    let name = format!("{histogram}_bucket");
    let mut out: Vec<(f64, f64)> = samples
        .iter()
        .filter(|s| s.name == name && matches(s, with))
        .filter_map(|s| Some((parse_value(s.labels.get("le")?)?, s.value)))
        .collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// The `q` quantile of cumulative buckets, interpolated linearly inside
/// the bucket it falls in (as Prometheus' `histogram_quantile` does); `None`
/// without observations. A quantile in the `+Inf` bucket is the largest
/// finite bound.
pub fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for &(bound, count) in buckets {
        if count >= rank {
            if bound.is_infinite() {
                return Some(lower);
            }
            let inside = count - below;
            let fraction = if inside > 0.0 {
                (rank - below) / inside
            } else {
                1.0
            };
            return Some(lower + (bound - lower) * fraction);
        }
        lower = bound;
        below = count;
    }
    Some(lower)
}

/// `now - then` bucket by bucket (the same layout); for a window's
/// observations.
pub fn delta(now: &[(f64, f64)], then: &[(f64, f64)]) -> Vec<(f64, f64)> {
    if now.len() != then.len() {
        return now.to_vec();
    }
    now.iter()
        .zip(then)
        .map(|(a, b)| (a.0, (a.1 - b.1).max(0.0)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_labels_with_escapes_and_infinities() {
        let text = "# TYPE x counter\nx_total{app=\"a\\\"b\",le=\"+Inf\"} 3\nplain 1.5\nbad line\n";
        let s = parse(text);
        assert_eq!(s.len(), 2, "{s:?}");
        assert_eq!(s[0].labels["app"], "a\"b");
        assert_eq!(s[0].labels["le"], "+Inf");
        assert_eq!(s[0].value, 3.0);
        assert_eq!(s[1].value, 1.5);
    }

    #[test]
    fn quantiles_interpolate_inside_a_bucket() {
        let b = [(0.01, 0.0), (0.1, 10.0), (1.0, 10.0), (f64::INFINITY, 10.0)];
        let p50 = quantile(&b, 0.5).unwrap();
        assert!((p50 - 0.055).abs() < 1e-9, "{p50}");
        assert_eq!(quantile(&[(0.1, 0.0), (f64::INFINITY, 0.0)], 0.5), None);
        let tail = [(0.1, 0.0), (f64::INFINITY, 2.0)];
        assert_eq!(quantile(&tail, 0.99), Some(0.1));
    }
}
