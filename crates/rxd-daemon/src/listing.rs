//! The query of every listing: `?recursion=`, LXD's `?filter=` and `?all-projects=`.

/// `?recursion=` of every listing: 0 lists URLs, 1 or more lists objects.
#[derive(serde::Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    pub recursion: u8,
    /// LXD's `api_filtering` expression, where the listing supports it.
    #[serde(default)]
    pub filter: Option<String>,
    /// `all-projects=true`: every project the caller may view, where the listing supports it.
    #[serde(default, rename = "all-projects")]
    pub all_projects: bool,
}

impl ListQuery {
    /// Keep the objects the filter selects (all when there is none), as URLs or objects.
    pub fn select(
        &self,
        objects: Vec<serde_json::Value>,
        url: impl Fn(&serde_json::Value) -> String,
    ) -> Result<Vec<serde_json::Value>, crate::error::ApiError> {
        let filter = match self
            .filter
            .as_deref()
            .map(str::trim)
            .filter(|f| !f.is_empty())
        {
            Some(f) => Some(
                rxd_core::filter::Filter::parse(f)
                    .map_err(|e| crate::error::ApiError::BadRequest(e.to_string()))?,
            ),
            None => None,
        };
        Ok(objects
            .into_iter()
            .filter(|o| filter.as_ref().is_none_or(|f| f.matches(o)))
            .map(|o| {
                if self.recursion > 0 {
                    o
                } else {
                    serde_json::Value::String(url(&o))
                }
            })
            .collect())
    }
}
