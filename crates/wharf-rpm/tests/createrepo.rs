//! The readers against trees written by the real tools: RPMs from `rpmbuild`, metadata from
//! `createrepo_c` in each compression it writes (gz, bz2, xz; Debian's build has no zstd, so
//! the `zstd` tool recompresses its primary), so what is parsed is what mirrors meet, not a
//! hand-written sample.

use std::fs;
use std::io::BufReader;

use wharf_rpm::{for_each_package, Compression, Repomd};
use wharf_testkit::fixture::rpm::{build_rpm, createrepo, RpmSpec};

#[test]
fn createrepo_trees_parse_in_every_compression() {
    let dir = tempfile::tempdir().unwrap();
    let mut old = RpmSpec::new("hello", "1.0");
    old.epoch = Some(2);
    old.requires = vec!["libdep".into()];
    build_rpm(&old, dir.path()).unwrap();
    let mut arch = RpmSpec::new("libdep", "0.3");
    arch.arch = "x86_64".into();
    build_rpm(&arch, dir.path()).unwrap();
    for (compression, ending) in [("gz", ".gz"), ("bz2", ".bz2"), ("xz", ".xz")] {
        let _ = fs::remove_dir_all(dir.path().join("repodata"));
        createrepo(
            dir.path(),
            &[
                &format!("--general-compress-type={compression}"),
                "--no-database",
            ],
        )
        .unwrap();
        let repomd =
            Repomd::parse(&fs::read(dir.path().join("repodata/repomd.xml")).unwrap()).unwrap();
        let kinds: Vec<&str> = repomd.records.iter().map(|r| r.kind.as_str()).collect();
        assert_eq!(kinds, ["primary", "filelists", "other"], "{compression}");
        let primary = repomd.record("primary").unwrap();
        let href = primary.location.relative_path("primary").unwrap();
        assert!(href.ends_with(ending), "{href}");
        let bytes = fs::read(dir.path().join(href)).unwrap();
        assert_eq!(Some(bytes.len() as u64), primary.size);
        let mut hasher = primary.checksum.verifier();
        hasher.update(&bytes);
        assert_eq!(hasher.finish(), primary.checksum);

        let decoder = Compression::from_name(href)
            .unwrap()
            .decoder(fs::File::open(dir.path().join(href)).unwrap())
            .unwrap();
        let mut packages = Vec::new();
        let n = for_each_package(BufReader::new(decoder), |p| {
            packages.push(p);
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 2, "{compression}");
        packages.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(packages[0].nevra(), "hello-2:1.0-1.noarch");
        assert_eq!(packages[1].nevra(), "libdep-0.3-1.x86_64");
        if compression == "xz" {
            // The same primary as zstd, written by the zstd tool.
            let plain = dir.path().join("primary.xml");
            let mut decoded = Compression::Xz
                .decoder(fs::File::open(dir.path().join(href)).unwrap())
                .unwrap();
            std::io::copy(&mut decoded, &mut fs::File::create(&plain).unwrap()).unwrap();
            let zstd = wharf_testkit::Tool::find("zstd");
            wharf_testkit::run(
                std::process::Command::new(zstd.path())
                    .arg("-q")
                    .arg(&plain),
            )
            .unwrap();
            let zst = dir.path().join("primary.xml.zst");
            let decoder = Compression::from_name("primary.xml.zst")
                .unwrap()
                .decoder(fs::File::open(&zst).unwrap())
                .unwrap();
            assert_eq!(
                for_each_package(BufReader::new(decoder), |_| Ok(())).unwrap(),
                2
            );
            fs::remove_file(plain).unwrap();
            fs::remove_file(zst).unwrap();
        }
        for p in &packages {
            let path = p.location.relative_path(&p.nevra()).unwrap();
            let rpm = fs::read(dir.path().join(path)).unwrap();
            assert_eq!(rpm.len() as u64, p.size);
            let mut hasher = p.checksum.verifier();
            hasher.update(&rpm);
            assert_eq!(hasher.finish(), p.checksum, "{}", p.nevra());
        }
    }
}

#[test]
fn a_large_primary_streams_with_flat_memory() {
    // 200,000 packages (~90 MB of XML) generated on the fly and gzip'd through a pipe: the
    // reader holds one package at a time, so this finishes without holding the document.
    use std::io::{Read, Write};
    struct Generated {
        next: u64,
        total: u64,
        pending: Vec<u8>,
        at: usize,
    }
    impl Read for Generated {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            while self.at == self.pending.len() {
                self.pending.clear();
                self.at = 0;
                if self.next == 0 {
                    self.pending.extend_from_slice(b"<metadata packages=\"x\">");
                } else if self.next <= self.total {
                    let i = self.next;
                    writeln!(
                        self.pending,
                        "<package type=\"rpm\"><name>p{i}</name><arch>noarch</arch>\
                         <version epoch=\"0\" ver=\"1\" rel=\"1\"/>\
                         <checksum type=\"sha256\" pkgid=\"YES\">{:064x}</checksum>\
                         <summary>s</summary><description>{}</description>\
                         <size package=\"{i}\"/><location href=\"Packages/p{i}.rpm\"/>\
                         <format><rpm:provides><rpm:entry name=\"p{i}\"/></rpm:provides></format></package>",
                        i,
                        "d".repeat(200)
                    )?;
                } else if self.next == self.total + 1 {
                    self.pending.extend_from_slice(b"</metadata>");
                } else {
                    return Ok(0);
                }
                self.next += 1;
            }
            let n = out.len().min(self.pending.len() - self.at);
            out[..n].copy_from_slice(&self.pending[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }
    let source = Generated {
        next: 0,
        total: 200_000,
        pending: Vec::new(),
        at: 0,
    };
    let gz = flate2::read::GzEncoder::new(source, flate2::Compression::fast());
    let decoder = Compression::Gzip.decoder(gz).unwrap();
    let mut last = 0;
    let n = for_each_package(BufReader::new(decoder), |p| {
        last = p.size;
        Ok(())
    })
    .unwrap();
    assert_eq!((n, last), (200_000, 200_000));
}
