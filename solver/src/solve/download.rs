//! ADD of http(s) URLs: downloaded into a temporary directory, checked against `--checksum`.

use super::*;

/// The file name BuildKit gives a downloaded URL: the last path segment, or `__unnamed__`.
pub(super) fn url_file_name(url: &str) -> String {
    let no_query = url.split(['?', '#']).next().unwrap_or(url);
    let path = no_query.splitn(4, '/').nth(3).unwrap_or("");
    match path.rsplit('/').next() {
        Some(n) if !n.is_empty() && n != "." => n.to_string(),
        _ => "__unnamed__".to_string(),
    }
}

impl BuildCtx<'_> {
    /// Downloads an ADD URL into a temporary directory (mode 0600, as BuildKit's HTTP source),
    /// checking `--checksum`; returns it as a view and the content digest.
    pub(super) fn download(
        &self,
        url: &str,
        checksum: Option<&str>,
        line: usize,
    ) -> Result<(View<'_>, String)> {
        use std::io::{Read as _, Write as _};
        let dir = self.solver.temp_dir()?;
        let path = dir.path().join(url_file_name(url));
        let fail = |m: String| Error::Plan {
            line,
            message: format!("failed to download {url}: {m}"),
        };
        let resp = ureq::get(url).call().map_err(|e| fail(e.to_string()))?;
        let mut reader = resp.into_body().into_reader();
        let mut f = std::fs::File::create(&path).map_err(io_err("create", &path))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = reader.read(&mut buf).map_err(|e| fail(e.to_string()))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            f.write_all(&buf[..n]).map_err(io_err("write", &path))?;
        }
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .map_err(io_err("chmod", &path))?;
        let digest = format!("sha256:{}", hex::encode(h.finalize()));
        if let Some(want) = checksum
            && want != digest
        {
            return Err(Error::Plan {
                line,
                message: format!("digest mismatch for {url}: expected {want}, got {digest}"),
            });
        }
        Ok((
            View {
                snapshotter: self.snapshotter(),
                key: None,
                mounted: None,
                empty: Some(dir),
            },
            digest,
        ))
    }
}
