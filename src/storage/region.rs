//! Where data may live: the AWS regions in Europe, the one list `fruits`
//! checks every region and bucket against before it reads or writes data.
//!
//! GDPR allows personal data (users' photos) in the EU and in countries with
//! an EU adequacy decision. London (UK) and Zurich (Switzerland) are outside
//! the EU but covered by adequacy decisions, so they are allowed too.

/// Legal standing of a region for GDPR transfers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// In an EU member state.
    Eu,
    /// Outside the EU, under an EU adequacy decision.
    Adequacy,
}

/// (region code, location, standing).
#[rustfmt::skip]
pub const EUROPEAN_REGIONS: [(&str, &str, Standing); 8] = [
    ("eu-west-1",    "Ireland",     Standing::Eu),
    ("eu-west-3",    "Paris",       Standing::Eu),
    ("eu-central-1", "Frankfurt",   Standing::Eu),
    ("eu-north-1",   "Stockholm",   Standing::Eu),
    ("eu-south-1",   "Milan",       Standing::Eu),
    ("eu-south-2",   "Spain",       Standing::Eu),
    ("eu-west-2",    "London",      Standing::Adequacy),
    ("eu-central-2", "Zurich",      Standing::Adequacy),
];

/// The default region (Ireland), where the EMR cluster runs.
pub const DEFAULT_REGION: &str = "eu-west-1";

pub fn is_european(region: &str) -> bool {
    EUROPEAN_REGIONS.iter().any(|(r, _, _)| *r == region)
}

/// The region a `GetBucketLocation` answer means: S3 answers `EU` for
/// eu-west-1 (a legacy name) and nothing at all for us-east-1.
pub fn region_of_location_constraint(constraint: Option<&str>) -> String {
    match constraint {
        None | Some("") => "us-east-1".to_string(),
        Some("EU") => "eu-west-1".to_string(),
        Some(r) => r.to_string(),
    }
}

pub fn european_list() -> String {
    EUROPEAN_REGIONS.iter().map(|(r, _, _)| *r).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_constraints_map_to_regions() {
        assert_eq!(region_of_location_constraint(Some("EU")), "eu-west-1");
        assert_eq!(region_of_location_constraint(None), "us-east-1");
        assert_eq!(region_of_location_constraint(Some("")), "us-east-1");
        assert_eq!(region_of_location_constraint(Some("eu-central-2")), "eu-central-2");
    }

    #[test]
    fn europe_only() {
        assert!(is_european("eu-west-1") && is_european("eu-west-2") && is_european("eu-central-2"));
        assert!(!is_european("us-east-1") && !is_european("ap-southeast-1") && !is_european("il-central-1"));
    }
}
