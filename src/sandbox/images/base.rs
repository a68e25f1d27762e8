//! The base image: runs the embedded `images/base/build.sh` on the host to make a Debian root
//! file system tar, then imports it into the engine as [`BASE_IMAGE`].

use super::{check_ca_bundle, BuildOptions, ImageError, BASE_IMAGE};
use crate::sandbox::DockerSandbox;
use bollard::query_parameters::CreateImageOptionsBuilder;
use futures_util::StreamExt;
use std::path::Path;
use tokio::process::Command;

const BASE_BUILD_SH: &str = include_str!("../../../images/base/build.sh");

impl DockerSandbox {
    pub(super) async fn build_base(&self, opts: &BuildOptions) -> Result<String, ImageError> {
        check_ca_bundle(opts)?;
        std::fs::create_dir_all(&opts.work_dir)?;
        let script = opts.work_dir.join("build-base.sh");
        std::fs::write(&script, BASE_BUILD_SH)?;
        let rootfs = opts.work_dir.join("base-rootfs.tar");
        let result = self.run_base_script(&script, &rootfs, opts).await;
        let _ = std::fs::remove_file(&script);
        if let Err(e) = result {
            let _ = std::fs::remove_file(&rootfs);
            return Err(e);
        }
        let imported = self.import_rootfs(&rootfs).await;
        let _ = std::fs::remove_file(&rootfs);
        imported?;
        Ok(BASE_IMAGE.to_string())
    }

    async fn run_base_script(
        &self,
        script: &Path,
        rootfs: &Path,
        opts: &BuildOptions,
    ) -> Result<(), ImageError> {
        let mut cmd = Command::new("bash");
        cmd.arg(script).arg(rootfs);
        if let Some(ca) = &opts.ca_bundle {
            cmd.env("RUNNER_CA_BUNDLE", ca);
        }
        // The script's progress goes to our stderr: the user sees debootstrap working.
        cmd.stdout(std::process::Stdio::null());
        let status = cmd.status().await.map_err(ImageError::Spawn)?;
        if !status.success() {
            return Err(ImageError::Script {
                image: BASE_IMAGE.into(),
                status: status.to_string(),
            });
        }
        Ok(())
    }

    async fn import_rootfs(&self, rootfs: &Path) -> Result<(), ImageError> {
        let (repo, tag) = BASE_IMAGE.split_once(':').expect("image ref has a tag");
        let options = CreateImageOptionsBuilder::new()
            .from_src("-")
            .repo(repo)
            .tag(tag)
            .changes(vec![
                "WORKDIR /workspace".into(),
                "ENV LANG=C.UTF-8".into(),
                r#"CMD ["/bin/sh"]"#.into(),
            ])
            .build();
        let file = tokio::fs::File::open(rootfs).await?;
        let body = bollard::body_try_stream(tokio_util::io::ReaderStream::new(file));
        let mut progress = self.client().create_image(Some(options), Some(body), None);
        while let Some(item) = progress.next().await {
            item.map_err(|e| self.map_err(e))?;
        }
        Ok(())
    }
}
