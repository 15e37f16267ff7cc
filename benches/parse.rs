//! Parser throughput: a generated Dockerfile of 10,000 instructions mixing every instruction
//! shape, line continuations, comments, JSON forms and heredocs. Reports MB/s for the syntax
//! layer alone (`ast`) and for the full typed parse (`typed`).
#![allow(missing_docs)]

use std::fmt::Write as _;
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// 10,000 instructions (stages of about 20 instructions each).
fn generate(instructions: usize) -> String {
    let mut s = String::from("# syntax=docker/dockerfile:1\nARG BASE=alpine:3.20\n");
    let mut n = 1;
    let mut i = 0;
    while n < instructions {
        let _ = writeln!(s, "FROM ${{BASE}} AS stage{i}");
        let body: [&str; 19] = [
            "# install the toolchain\nRUN apk add --no-cache \\\n    build-base \\\n    git \\\n    curl",
            "ENV PATH=/usr/local/bin:$PATH LANG=C.UTF-8 \\\n    HOME=/root",
            "LABEL org.opencontainers.image.title=\"kiln bench\" version=1.0",
            "WORKDIR /src/app",
            "COPY --chown=1000:1000 --chmod=0644 go.mod go.sum ./",
            "RUN --mount=type=cache,target=/root/.cache/go-build \\\n    --mount=type=bind,source=.,target=/src \\\n    go build -o /out/app ./cmd/app",
            "RUN <<EOF\nset -eux\necho building $HOME\nmake -j4 all\nEOF",
            "COPY <<-\"CONF\" /etc/app.conf\n\tlisten = 0.0.0.0:8080\n\tworkers = 4\n\tCONF",
            "ADD --checksum=sha256:0123456789abcdef https://example.com/x.tar.gz /tmp/",
            "ARG VERSION=1.2.3",
            "USER 1000:1000",
            "EXPOSE 8080/tcp 9090",
            "VOLUME [\"/data\", \"/logs\"]",
            "HEALTHCHECK --interval=30s --timeout=3s CMD wget -qO- http://localhost:8080/ || exit 1",
            "STOPSIGNAL SIGTERM",
            "SHELL [\"/bin/sh\", \"-eu\", \"-c\"]",
            "ONBUILD RUN echo triggered",
            "ENTRYPOINT [\"/out/app\", \"--config\", \"/etc/app.conf\"]",
            "CMD [\"serve\"]",
        ];
        for line in body {
            if n >= instructions {
                break;
            }
            s.push_str(line);
            s.push('\n');
            n += 1;
        }
        n += 1;
        i += 1;
    }
    s
}

fn bench_parse(c: &mut Criterion) {
    let src = generate(10_000);
    let parsed = kiln_parser::parse(src.as_bytes()).expect("generated Dockerfile parses");
    let count: usize = parsed
        .stages
        .iter()
        .map(|s| s.instructions.len() + 1)
        .sum::<usize>()
        + parsed.global.len();
    assert!(count >= 10_000, "only {count} instructions");

    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Bytes(src.len() as u64));
    group.bench_function("ast", |b| {
        b.iter(|| kiln_parser::ast::parse_ast(black_box(src.as_bytes())).expect("parses"));
    });
    group.bench_function("typed", |b| {
        b.iter(|| kiln_parser::parse(black_box(src.as_bytes())).expect("parses"));
    });
    group.finish();
}

criterion_group!(benches, bench_parse);
criterion_main!(benches);
