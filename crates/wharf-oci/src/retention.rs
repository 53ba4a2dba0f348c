//! Retention: which tags and manifests of a repository a rule lets go.
//!
//! [`decide`] is the whole policy, pure and unit-tested: tags kept by the
//! rule's `keep_*` criteria, manifests they reach (an index's children),
//! referrers and cosign signature tags of what stays, and untagged manifests
//! younger than the grace period stay; everything else goes. The registry
//! deletes through its own delete operations ([`Registry::delete_manifest`]),
//! so references, tags and GC candidates stay right, and garbage collection
//! reclaims the bytes.

use std::collections::{HashMap, HashSet};

use wharf_core::{Digest, RepoName, RepoPattern, Tag};
use wharf_meta::{ManifestAge, RefOwner, TagPush};

use crate::{OciError, Registry};

/// One rule, lowered from the configuration.
#[derive(Debug, Clone)]
pub struct RetentionRule {
    /// Repositories it applies to.
    pub repositories: RepoPattern,
    /// Whether tags are selected at all (some `keep_*` criterion is set);
    /// when false every tag is kept.
    pub selects_tags: bool,
    /// Keep this many most recently pushed tags (of those `keep_newest_matching` matches).
    pub keep_newest: usize,
    /// Which tags `keep_newest` counts; `None`: every tag.
    pub keep_newest_matching: Option<regex::Regex>,
    /// Tags matching this are always kept (the rule's protect pattern).
    pub keep_tags: Option<regex::Regex>,
    /// `[retention] protect`, copied into every rule: tags matching it are
    /// never deleted, whatever the rule says.
    pub protect: Option<regex::Regex>,
    /// Tags pushed within this many seconds are kept.
    pub keep_pushed_within_secs: Option<i64>,
    /// Tags whose manifest was pulled within this many seconds are kept.
    pub keep_pulled_within_secs: Option<i64>,
    /// Delete manifests that were already untagged (older than the grace).
    pub delete_untagged: bool,
}

/// Every rule, in order (a repository follows the first that matches).
#[derive(Debug, Clone, Default)]
pub struct RetentionPolicy {
    /// The rules.
    pub rules: Vec<RetentionRule>,
    /// Untagged manifests younger than this many seconds are kept (GC's grace).
    pub untagged_grace_secs: i64,
}

/// What retention removes from one repository.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepositoryPlan {
    /// Tags removed while their manifest stays.
    pub tags: Vec<(Tag, Digest)>,
    /// Manifests removed, with the tags that go with them; parents first.
    pub manifests: Vec<(Digest, Vec<Tag>)>,
}

impl RepositoryPlan {
    /// Whether nothing goes.
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty() && self.manifests.is_empty()
    }
}

/// A whole run: what goes, per repository, and what GC then frees.
#[derive(Debug, Clone, Default)]
pub struct RetentionPlan {
    /// Repositories with something to remove.
    pub repositories: Vec<(RepoName, RepositoryPlan)>,
    /// Blobs only the removed manifests hold, which GC then deletes.
    pub freed_blobs: usize,
    /// Their bytes.
    pub freed_bytes: u64,
}

impl RetentionPlan {
    /// Tags removed in all, with their manifests or alone.
    pub fn tag_count(&self) -> usize {
        self.repositories
            .iter()
            .map(|(_, p)| p.tags.len() + p.manifests.iter().map(|m| m.1.len()).sum::<usize>())
            .sum()
    }

    /// Manifests removed.
    pub fn manifest_count(&self) -> usize {
        self.repositories
            .iter()
            .map(|(_, p)| p.manifests.len())
            .sum()
    }
}

/// The digest a cosign tag (`sha256-HEX.sig`, `.att`, `.sbom`) belongs to.
fn signature_subject(tag: &str) -> Option<Digest> {
    let rest = tag.strip_prefix("sha256-")?;
    let hex = [".sig", ".att", ".sbom"]
        .iter()
        .find_map(|suffix| rest.strip_suffix(suffix))?;
    Digest::parse(&format!("sha256:{hex}")).ok()
}

/// What `rule` removes from a repository with these tags and manifests at `now`.
pub fn decide(
    rule: &RetentionRule,
    grace_secs: i64,
    tags: &[TagPush],
    manifests: &[ManifestAge],
    now: i64,
) -> RepositoryPlan {
    let by_digest: HashMap<&Digest, &ManifestAge> =
        manifests.iter().map(|m| (&m.digest, m)).collect();
    let (signatures, mut ordinary): (Vec<&TagPush>, Vec<&TagPush>) = tags.iter().partition(|t| {
        signature_subject(t.tag.as_str()).is_some_and(|s| by_digest.contains_key(&s))
    });
    // Newest first; equal times in name order, so the choice is stable.
    ordinary.sort_by(|a, b| b.pushed_at.cmp(&a.pushed_at).then(a.tag.cmp(&b.tag)));
    let matches = |re: &Option<regex::Regex>, t: &TagPush| {
        re.as_ref().is_some_and(|re| re.is_match(t.tag.as_str()))
    };
    // `i` counts only the tags keep_newest counts: the N newest of those.
    let kept = |i: Option<usize>, t: &TagPush| {
        !rule.selects_tags
            || i.is_some_and(|i| i < rule.keep_newest)
            || matches(&rule.keep_tags, t)
            || matches(&rule.protect, t)
            || rule
                .keep_pushed_within_secs
                .is_some_and(|within| now.saturating_sub(t.pushed_at) <= within)
            || rule.keep_pulled_within_secs.is_some_and(|within| {
                t.pulled_at
                    .is_some_and(|at| now.saturating_sub(at) <= within)
            })
    };
    let mut kept_tags: Vec<&TagPush> = Vec::new();
    let mut doomed_tags: Vec<&TagPush> = Vec::new();
    let mut counted = 0usize;
    for t in ordinary {
        let i = match &rule.keep_newest_matching {
            Some(re) if !re.is_match(t.tag.as_str()) => None,
            _ => {
                counted += 1;
                Some(counted - 1)
            }
        };
        if kept(i, t) {
            kept_tags.push(t);
        } else {
            doomed_tags.push(t);
        }
    }
    let tagged: HashSet<&Digest> = tags.iter().map(|t| &t.digest).collect();

    // What stays: kept tags' manifests, untagged manifests within the grace
    // (or all untagged ones when the rule keeps them), then, to a fixed point,
    // children of what stays, referrers of what stays, and signature tags of
    // what stays.
    let mut live: HashSet<&Digest> = HashSet::new();
    let mut queue: Vec<&Digest> = kept_tags.iter().map(|t| &t.digest).collect();
    for m in manifests {
        let untagged = !tagged.contains(&m.digest);
        let young = now.saturating_sub(m.created_at) < grace_secs;
        if untagged && (young || !rule.delete_untagged) && m.subject.is_none() {
            queue.push(&m.digest);
        }
    }
    let mut kept_signatures: HashSet<&Tag> = HashSet::new();
    loop {
        while let Some(d) = queue.pop() {
            if !live.insert(d) {
                continue;
            }
            if let Some(m) = by_digest.get(d) {
                queue.extend(m.children.iter());
            }
        }
        let mut grew = false;
        for m in manifests {
            let Some(subject) = &m.subject else { continue };
            if live.contains(subject) && !live.contains(&m.digest) {
                queue.push(&m.digest);
                grew = true;
            } else if !tagged.contains(&m.digest)
                && !by_digest.contains_key(subject)
                && !live.contains(&m.digest)
                && (!rule.delete_untagged || now.saturating_sub(m.created_at) < grace_secs)
            {
                // A referrer whose subject is not here is an ordinary untagged manifest.
                queue.push(&m.digest);
                grew = true;
            }
        }
        for t in &signatures {
            let subject = signature_subject(t.tag.as_str());
            if subject.as_ref().is_some_and(|s| live.contains(s)) && kept_signatures.insert(&t.tag)
            {
                queue.push(&t.digest);
                grew = true;
            }
        }
        if !grew && queue.is_empty() {
            break;
        }
    }

    let mut plan = RepositoryPlan::default();
    let mut dead: Vec<&ManifestAge> = manifests
        .iter()
        .filter(|m| !live.contains(&m.digest))
        .collect();
    // Parents before children, so an interrupted run leaves no index behind
    // that lists a manifest already gone.
    dead.sort_by(|a, b| {
        (a.children.is_empty(), &a.digest).cmp(&(b.children.is_empty(), &b.digest))
    });
    for m in dead {
        let mut with: Vec<Tag> = tags
            .iter()
            .filter(|t| t.digest == m.digest)
            .map(|t| t.tag.clone())
            .collect();
        with.sort();
        plan.manifests.push((m.digest.clone(), with));
    }
    let removed_signatures = signatures
        .iter()
        .filter(|t| !kept_signatures.contains(&t.tag))
        .copied();
    for t in doomed_tags.into_iter().chain(removed_signatures) {
        if live.contains(&t.digest) {
            plan.tags.push((t.tag.clone(), t.digest.clone()));
        }
    }
    plan.tags.sort();
    plan
}

impl Registry {
    /// The rule of `policy` that `repo` follows, if any.
    fn rule_for<'p>(policy: &'p RetentionPolicy, repo: &RepoName) -> Option<&'p RetentionRule> {
        policy
            .rules
            .iter()
            .find(|r| r.repositories.matches(repo.as_str()))
    }

    /// What `policy` removes from `repo` now.
    async fn plan_repository(
        &self,
        policy: &RetentionPolicy,
        rule: &RetentionRule,
        repo: &RepoName,
        now: i64,
    ) -> Result<(RepositoryPlan, Vec<TagPush>), OciError> {
        let tags = self.meta.tag_pushes(repo).await?;
        let manifests = self.meta.manifest_ages(repo).await?;
        let plan = decide(rule, policy.untagged_grace_secs, &tags, &manifests, now);
        Ok((plan, tags))
    }

    /// Every OCI repository, in name order.
    async fn all_repositories(&self) -> Result<Vec<RepoName>, OciError> {
        let mut out = Vec::new();
        let mut last: Option<String> = None;
        loop {
            let page = self.catalog(Some(1000), last.as_deref()).await?;
            out.extend(page.items.iter().filter_map(|n| RepoName::parse(n).ok()));
            match (page.more, page.items.into_iter().last()) {
                (true, Some(name)) => last = Some(name),
                _ => return Ok(out),
            }
        }
    }

    /// What `policy` would remove now, and what GC would then free: the dry run.
    pub async fn plan_retention(
        &self,
        policy: &RetentionPolicy,
        now: i64,
    ) -> Result<RetentionPlan, OciError> {
        let mut plan = RetentionPlan::default();
        let mut owners = Vec::new();
        for repo in self.all_repositories().await? {
            let Some(rule) = Self::rule_for(policy, &repo) else {
                continue;
            };
            let (repo_plan, _) = self.plan_repository(policy, rule, &repo, now).await?;
            if repo_plan.is_empty() {
                continue;
            }
            owners.extend(
                repo_plan
                    .manifests
                    .iter()
                    .map(|(digest, _)| RefOwner::OciManifest {
                        repo: repo.clone(),
                        digest: digest.clone(),
                    }),
            );
            plan.repositories.push((repo, repo_plan));
        }
        let freed = self.meta.blobs_only_held_by(&owners).await?;
        plan.freed_blobs = freed.len();
        plan.freed_bytes = freed.iter().map(|(_, size)| size).sum();
        Ok(plan)
    }

    /// Applies `policy`: each repository is planned again just before its
    /// deletions (so a push since the dry run is seen), and `report` hears of
    /// each repository's removals as they are done. `cancelled` is asked before
    /// each repository. Returns what was removed.
    ///
    /// Every deletion is conditional in the metadata layer
    /// (`Meta::delete_tag_if_unchanged`, `Meta::delete_manifest_if_unchanged`):
    /// a tag moved or pushed again between this re-plan and its deletion, or a
    /// manifest that a new tag or index names meanwhile, stays, and is left out
    /// of what is reported; the next run decides about it afresh.
    pub async fn apply_retention(
        &self,
        policy: &RetentionPolicy,
        now: i64,
        report: &(dyn Fn(&RepoName, &RepositoryPlan) + Send + Sync),
        cancelled: &(dyn Fn() -> bool + Send + Sync),
    ) -> Result<RetentionPlan, OciError> {
        let mut done = RetentionPlan::default();
        // Blobs whose last holder a deletion below removes: each is counted at
        // the step that removes its last holder, so later steps, which no
        // longer see the earlier holders' references, count it no more.
        let mut freed: HashMap<Digest, u64> = HashMap::new();
        for repo in self.all_repositories().await? {
            if cancelled() {
                break;
            }
            let Some(rule) = Self::rule_for(policy, &repo) else {
                continue;
            };
            let (plan, pushes) = self.plan_repository(policy, rule, &repo, now).await?;
            if plan.is_empty() {
                continue;
            }
            // Which push wrote each tag the plan saw: a deletion goes only if
            // no push has written the tag since.
            let push_ids: HashMap<&Tag, i64> = pushes.iter().map(|t| (&t.tag, t.push_id)).collect();
            let at = |tag: &Tag| push_ids.get(tag).copied().unwrap_or(-1);
            let these: Vec<RefOwner> = plan
                .manifests
                .iter()
                .map(|(digest, _)| RefOwner::OciManifest {
                    repo: repo.clone(),
                    digest: digest.clone(),
                })
                .collect();
            // Measured before the deletions drop the references it reads.
            let might_free = self.meta.blobs_only_held_by(&these).await?;
            let mut did = RepositoryPlan::default();
            for (tag, digest) in &plan.tags {
                if self
                    .meta
                    .delete_tag_if_unchanged(&repo, tag, digest, at(tag))
                    .await?
                {
                    did.tags.push((tag.clone(), digest.clone()));
                }
            }
            for (digest, tags) in &plan.manifests {
                let expected: Vec<(Tag, i64)> = tags.iter().map(|t| (t.clone(), at(t))).collect();
                if self
                    .meta
                    .delete_manifest_if_unchanged(&repo, digest, &expected)
                    .await?
                {
                    did.manifests.push((digest.clone(), tags.clone()));
                }
            }
            // After the writes, so a concurrent lookup cannot re-cache an old record.
            self.forget_records();
            if did.manifests.len() == plan.manifests.len() {
                freed.extend(might_free);
            } else if !did.manifests.is_empty() {
                // Some stayed (changed since the plan): count only the blobs
                // that nothing references any more.
                for (blob, size) in might_free {
                    if !self.meta.blob_is_needed(&blob).await? {
                        freed.insert(blob, size);
                    }
                }
            }
            if did.is_empty() {
                continue;
            }
            report(&repo, &did);
            done.repositories.push((repo, did));
        }
        done.freed_blobs = freed.len();
        done.freed_bytes = freed.values().sum();
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    fn d(n: u8) -> Digest {
        Digest::sha256_of(&[n])
    }

    fn tag(name: &str, digest: Digest, pushed_at: i64) -> TagPush {
        TagPush {
            tag: Tag::parse(name).unwrap(),
            digest,
            pushed_at,
            pulled_at: None,
            push_id: 0,
        }
    }

    fn manifest(digest: Digest, created_at: i64) -> ManifestAge {
        ManifestAge {
            digest,
            size: 100,
            created_at,
            subject: None,
            children: Vec::new(),
        }
    }

    fn rule(keep_newest: usize) -> RetentionRule {
        RetentionRule {
            repositories: RepoPattern::parse("**").unwrap(),
            selects_tags: true,
            keep_newest,
            keep_newest_matching: None,
            keep_tags: None,
            protect: None,
            keep_pushed_within_secs: None,
            keep_pulled_within_secs: None,
            delete_untagged: true,
        }
    }

    #[test]
    fn tags_pulled_recently_are_kept() {
        let now = 100 * DAY;
        let mut pulled = tag("pulled", d(1), now - 90 * DAY);
        pulled.pulled_at = Some(now - 3 * DAY);
        let mut stale = tag("stale", d(2), now - 90 * DAY);
        stale.pulled_at = Some(now - 40 * DAY);
        let never = tag("never", d(3), now - 90 * DAY);
        let manifests: Vec<_> = (1..=3).map(|n| manifest(d(n), now - 90 * DAY)).collect();
        let mut r = rule(0);
        r.keep_pulled_within_secs = Some(30 * DAY);
        let plan = decide(&r, DAY, &[pulled, stale, never], &manifests, now);
        let mut gone: Vec<_> = plan.manifests.iter().map(|m| m.0.clone()).collect();
        gone.sort();
        let mut expected = vec![d(2), d(3)];
        expected.sort();
        assert_eq!(gone, expected);
    }

    #[test]
    fn newest_regex_and_recent_tags_are_kept() {
        let now = 100 * DAY;
        let tags = vec![
            tag("a", d(1), now - 50 * DAY),
            tag("b", d(2), now - 40 * DAY),
            tag("v1.0", d(3), now - 30 * DAY),
            tag("c", d(4), now - 20 * DAY),
            tag("d", d(5), now - 2 * DAY),
            // Shares its manifest with a kept tag: only the tag goes.
            tag("e", d(5), now - 60 * DAY),
        ];
        let manifests: Vec<_> = (1..=5).map(|n| manifest(d(n), now - 60 * DAY)).collect();
        let mut r = rule(1);
        r.keep_tags = Some(regex::Regex::new(r"^v\d").unwrap());
        r.keep_pushed_within_secs = Some(25 * DAY);
        let plan = decide(&r, DAY, &tags, &manifests, now);
        let gone: Vec<_> = plan.manifests.iter().map(|m| m.0.clone()).collect();
        let mut expected = vec![d(1), d(2)];
        expected.sort();
        let mut gone_sorted = gone.clone();
        gone_sorted.sort();
        assert_eq!(gone_sorted, expected);
        assert_eq!(plan.tags, vec![(Tag::parse("e").unwrap(), d(5))]);
        assert_eq!(plan.tag_count_for_test(), 3);
    }

    #[test]
    fn keep_newest_counts_only_matching_tags_and_protect_always_holds() {
        let now = 100 * DAY;
        // Newest first by push time: v3, dev2, v2, dev1, v1, old.
        let tags = vec![
            tag("v1", d(1), now - 50 * DAY),
            tag("v2", d(2), now - 30 * DAY),
            tag("v3", d(3), now - 10 * DAY),
            tag("dev1", d(4), now - 40 * DAY),
            tag("dev2", d(5), now - 20 * DAY),
            tag("old", d(6), now - 90 * DAY),
        ];
        let manifests: Vec<_> = (1..=6).map(|n| manifest(d(n), now - 90 * DAY)).collect();
        let gone = |r: &RetentionRule| {
            let plan = decide(r, DAY, &tags, &manifests, now);
            let mut tags: Vec<String> = plan
                .manifests
                .iter()
                .flat_map(|m| m.1.iter().map(|t| t.to_string()))
                .collect();
            tags.sort();
            tags
        };
        let mut r = rule(2);
        r.keep_newest_matching = Some(regex::Regex::new("^v").unwrap());
        // The two newest v* tags stay; dev* and old are not counted, so they go…
        assert_eq!(gone(&r), ["dev1", "dev2", "old", "v1"]);
        // …unless another keep_* key keeps them…
        r.keep_pushed_within_secs = Some(25 * DAY);
        assert_eq!(gone(&r), ["dev1", "old", "v1"]);
        // …and the protect pattern holds whatever the rule says.
        r.protect = Some(regex::Regex::new("^(old|v1)$").unwrap());
        assert_eq!(gone(&r), ["dev1"]);
        // Without the pattern, keep_newest counts every tag.
        let plain = rule(2);
        assert_eq!(gone(&plain), ["dev1", "old", "v1", "v2"]);
    }

    #[test]
    fn a_rule_without_keep_criteria_keeps_every_tag_and_drops_old_untagged() {
        let now = 10 * DAY;
        let tags = vec![tag("a", d(1), 0)];
        let manifests = vec![
            manifest(d(1), 0),
            manifest(d(2), 0),        // untagged, old: goes
            manifest(d(3), now - 60), // untagged, young: stays
        ];
        let mut r = rule(0);
        r.selects_tags = false;
        let plan = decide(&r, DAY, &tags, &manifests, now);
        assert_eq!(plan.manifests, vec![(d(2), vec![])]);
        r.delete_untagged = false;
        assert!(decide(&r, DAY, &tags, &manifests, now).is_empty());
    }

    #[test]
    fn children_referrers_and_signatures_follow_their_parent() {
        let now = 10 * DAY;
        let mut index = manifest(d(10), 0);
        index.children = vec![d(11), d(12)];
        let mut old_index = manifest(d(20), 0);
        old_index.children = vec![d(21)];
        let mut referrer = manifest(d(13), 0);
        referrer.subject = Some(d(10));
        let mut orphan_referrer = manifest(d(22), 0);
        orphan_referrer.subject = Some(d(20));
        let signature = manifest(d(30), 0);
        let old_signature = manifest(d(31), 0);
        let sig_tag = |subject: &Digest| format!("sha256-{}.sig", subject.hex());
        let tags = vec![
            tag("new", d(10), now - 60),
            tag("old", d(20), 0),
            tag(&sig_tag(&d(10)), d(30), 0),
            tag(&sig_tag(&d(20)), d(31), 0),
        ];
        let manifests = vec![
            index,
            manifest(d(11), 0),
            manifest(d(12), 0),
            referrer,
            old_index,
            manifest(d(21), 0),
            orphan_referrer,
            signature,
            old_signature,
        ];
        let plan = decide(&rule(1), DAY, &tags, &manifests, now);
        let gone: HashSet<_> = plan.manifests.iter().map(|m| m.0.clone()).collect();
        assert_eq!(gone, HashSet::from([d(20), d(21), d(22), d(31)]));
        // The index goes before its child.
        let pos = |x: &Digest| plan.manifests.iter().position(|m| &m.0 == x).unwrap();
        assert!(pos(&d(20)) < pos(&d(21)));
        assert!(plan.tags.is_empty());
    }

    impl RepositoryPlan {
        fn tag_count_for_test(&self) -> usize {
            self.tags.len() + self.manifests.iter().map(|m| m.1.len()).sum::<usize>()
        }
    }
}
