//! The image history's times: filled and clamped as BuildKit's exporter does.

/// Fills the history times a step did not give as BuildKit's `normalizeLayersAndHistory`
/// does (the first new entry's time, then each later entry's predecessor's), then clamps every
/// time after the first `base_len` (the base image's) to `epoch` when given, as its exporter
/// does for `SOURCE_DATE_EPOCH`.
pub(super) fn stamp_history(
    history: &mut [kiln_image::spec::History],
    base_len: usize,
    epoch: Option<i64>,
) {
    let mut created: Option<String> = None;
    let mut gap = false;
    for h in history.iter() {
        if let Some(c) = &h.created {
            created = Some(c.clone());
            if gap {
                break;
            }
        } else {
            gap = true;
        }
    }
    gap = false;
    for h in history.iter_mut() {
        if let Some(c) = &h.created {
            if gap {
                created = Some(c.clone());
            }
        } else {
            gap = true;
            h.created.clone_from(&created);
        }
    }
    if let Some(secs) = epoch {
        let ts = kiln_image::spec::format_rfc3339(secs, 0);
        for h in history.iter_mut().skip(base_len) {
            let later = h
                .created
                .as_deref()
                .and_then(kiln_image::spec::parse_rfc3339)
                .is_none_or(|t| t > secs);
            if later {
                h.created = Some(ts.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(created: Option<&str>) -> kiln_image::spec::History {
        kiln_image::spec::History {
            created: created.map(String::from),
            ..kiln_image::spec::History::default()
        }
    }

    #[test]
    fn history_times_are_filled_and_clamped_as_buildkit_does() {
        let t = |h: &[kiln_image::spec::History]| -> Vec<Option<String>> {
            h.iter().map(|x| x.created.clone()).collect()
        };
        let s = |v: &str| Some(v.to_string());
        // A base entry, an ENV (no time), a step, an ENV after it.
        let mut h = vec![
            hist(Some("2020-01-01T00:00:00Z")),
            hist(None),
            hist(Some("2026-01-01T00:00:00Z")),
            hist(None),
        ];
        stamp_history(&mut h, 1, None);
        assert_eq!(
            t(&h),
            [
                s("2020-01-01T00:00:00Z"),
                s("2026-01-01T00:00:00Z"),
                s("2026-01-01T00:00:00Z"),
                s("2026-01-01T00:00:00Z")
            ]
        );
        // An epoch clamps later times past the base image's entries, and keeps earlier ones.
        let mut h = vec![
            hist(Some("2024-01-01T00:00:00Z")),
            hist(Some("2026-01-01T00:00:00Z")),
            hist(Some("1970-01-01T00:00:10Z")),
        ];
        stamp_history(&mut h, 1, Some(1_000_000));
        assert_eq!(
            t(&h),
            [
                s("2024-01-01T00:00:00Z"),
                s("1970-01-12T13:46:40Z"),
                s("1970-01-01T00:00:10Z")
            ]
        );
    }
}
