//! Parsing helpers shared by the cgroup file readers.

/// `key value` lines (cpu.stat, memory.stat, memory.events, cpuacct.stat).
/// Yields `Err(line_number)` for a line that is not two fields with an
/// unsigned number; callers skip it and count it.
pub fn keyed(text: &str) -> impl Iterator<Item = Result<(&str, u64), usize>> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            let mut fields = line.split_whitespace();
            match (
                fields.next(),
                fields.next().map(str::parse::<u64>),
                fields.next(),
            ) {
                (Some(key), Some(Ok(value)), None) => Ok((key, value)),
                _ => Err(i + 1),
            }
        })
}

/// A file holding one unsigned number.
pub fn single(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// A file holding one number or `max` (v2 limits): `Some(None)` is `max`.
pub fn number_or_max(text: &str) -> Option<Option<u64>> {
    match text.trim() {
        "max" => Some(None),
        other => other.parse().ok().map(Some),
    }
}

/// `key=value` pairs after a leading word (PSI lines, io.stat lines).
pub fn pairs(rest: &str) -> impl Iterator<Item = (&str, &str)> {
    rest.split_whitespace().filter_map(|kv| kv.split_once('='))
}

/// `MAJ:MIN`.
pub fn device(text: &str) -> Option<(u32, u32)> {
    let (major, minor) = text.split_once(':')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_lines_skip_garbage_and_report_its_line() {
        let parsed: Vec<_> = keyed("a 1\nb x\n\nc 3 4\nd 5\n").collect();
        assert_eq!(parsed, vec![Ok(("a", 1)), Err(2), Err(4), Ok(("d", 5))]);
    }

    #[test]
    fn numbers_and_max() {
        assert_eq!(single("42\n"), Some(42));
        assert_eq!(single("-1\n"), None);
        assert_eq!(number_or_max("max\n"), Some(None));
        assert_eq!(number_or_max("1024\n"), Some(Some(1024)));
        assert_eq!(number_or_max("lots"), None);
        assert_eq!(device("8:16"), Some((8, 16)));
        assert_eq!(device("8-16"), None);
    }
}
