"""OAuth2 credential provider vendors: which input structure each takes and where its endpoints are.

``CustomOauth2`` brings its own discovery URL or authorization-server metadata; the vendors with a structure of
their own in the API (Google, GitHub, ...) map to their public endpoints; every other vendor of the enum goes through
``includedOauth2ProviderConfig`` and may name its issuer and endpoints there (tenant-specific IdPs must).
"""

from __future__ import annotations

from dataclasses import dataclass

VENDORS: tuple[str, ...] = (
    "GoogleOauth2",
    "GithubOauth2",
    "SlackOauth2",
    "SalesforceOauth2",
    "MicrosoftOauth2",
    "CustomOauth2",
    "AtlassianOauth2",
    "LinkedinOauth2",
    "XOauth2",
    "OktaOauth2",
    "OneLoginOauth2",
    "PingOneOauth2",
    "FacebookOauth2",
    "YandexOauth2",
    "RedditOauth2",
    "ZoomOauth2",
    "TwitchOauth2",
    "SpotifyOauth2",
    "DropboxOauth2",
    "NotionOauth2",
    "HubspotOauth2",
    "CyberArkOauth2",
    "FusionAuthOauth2",
    "Auth0Oauth2",
    "CognitoOauth2",
)

# Vendors with their own input/output structure; all others use includedOauth2ProviderConfig.
CONFIG_KEYS: dict[str, str] = {
    "CustomOauth2": "customOauth2ProviderConfig",
    "GoogleOauth2": "googleOauth2ProviderConfig",
    "GithubOauth2": "githubOauth2ProviderConfig",
    "SlackOauth2": "slackOauth2ProviderConfig",
    "SalesforceOauth2": "salesforceOauth2ProviderConfig",
    "MicrosoftOauth2": "microsoftOauth2ProviderConfig",
    "AtlassianOauth2": "atlassianOauth2ProviderConfig",
    "LinkedinOauth2": "linkedinOauth2ProviderConfig",
}
INCLUDED_KEY = "includedOauth2ProviderConfig"
ALL_CONFIG_KEYS: tuple[str, ...] = (*CONFIG_KEYS.values(), INCLUDED_KEY)


@dataclass(frozen=True)
class Endpoints:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str


# Public endpoints of vendors that have one fixed authorization server ({tenant} for Microsoft's tenant id).
WELL_KNOWN: dict[str, Endpoints] = {
    "GoogleOauth2": Endpoints(
        "https://accounts.google.com",
        "https://accounts.google.com/o/oauth2/v2/auth",
        "https://oauth2.googleapis.com/token",
    ),
    "GithubOauth2": Endpoints(
        "https://github.com", "https://github.com/login/oauth/authorize", "https://github.com/login/oauth/access_token"
    ),
    "SlackOauth2": Endpoints(
        "https://slack.com", "https://slack.com/oauth/v2/authorize", "https://slack.com/api/oauth.v2.access"
    ),
    "SalesforceOauth2": Endpoints(
        "https://login.salesforce.com",
        "https://login.salesforce.com/services/oauth2/authorize",
        "https://login.salesforce.com/services/oauth2/token",
    ),
    "MicrosoftOauth2": Endpoints(
        "https://login.microsoftonline.com/{tenant}/v2.0",
        "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/authorize",
        "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token",
    ),
    "AtlassianOauth2": Endpoints(
        "https://auth.atlassian.com", "https://auth.atlassian.com/authorize", "https://auth.atlassian.com/oauth/token"
    ),
    "LinkedinOauth2": Endpoints(
        "https://www.linkedin.com/oauth",
        "https://www.linkedin.com/oauth/v2/authorization",
        "https://www.linkedin.com/oauth/v2/accessToken",
    ),
    "XOauth2": Endpoints("https://x.com", "https://x.com/i/oauth2/authorize", "https://api.x.com/2/oauth2/token"),
    "FacebookOauth2": Endpoints(
        "https://www.facebook.com",
        "https://www.facebook.com/v19.0/dialog/oauth",
        "https://graph.facebook.com/v19.0/oauth/access_token",
    ),
    "YandexOauth2": Endpoints(
        "https://oauth.yandex.com", "https://oauth.yandex.com/authorize", "https://oauth.yandex.com/token"
    ),
    "RedditOauth2": Endpoints(
        "https://www.reddit.com",
        "https://www.reddit.com/api/v1/authorize",
        "https://www.reddit.com/api/v1/access_token",
    ),
    "ZoomOauth2": Endpoints("https://zoom.us", "https://zoom.us/oauth/authorize", "https://zoom.us/oauth/token"),
    "TwitchOauth2": Endpoints(
        "https://id.twitch.tv/oauth2", "https://id.twitch.tv/oauth2/authorize", "https://id.twitch.tv/oauth2/token"
    ),
    "SpotifyOauth2": Endpoints(
        "https://accounts.spotify.com",
        "https://accounts.spotify.com/authorize",
        "https://accounts.spotify.com/api/token",
    ),
    "DropboxOauth2": Endpoints(
        "https://www.dropbox.com", "https://www.dropbox.com/oauth2/authorize", "https://api.dropboxapi.com/oauth2/token"
    ),
    "NotionOauth2": Endpoints(
        "https://api.notion.com", "https://api.notion.com/v1/oauth/authorize", "https://api.notion.com/v1/oauth/token"
    ),
    "HubspotOauth2": Endpoints(
        "https://app.hubspot.com", "https://app.hubspot.com/oauth/authorize", "https://api.hubapi.com/oauth/v1/token"
    ),
}


def config_key(vendor: str) -> str:
    return CONFIG_KEYS.get(vendor, INCLUDED_KEY)


def well_known(vendor: str, tenant_id: str | None = None) -> Endpoints | None:
    found = WELL_KNOWN.get(vendor)
    if found is None:
        return None
    tenant = tenant_id or "common"
    return Endpoints(
        *(
            part.replace("{tenant}", tenant)
            for part in (found.issuer, found.authorization_endpoint, found.token_endpoint)
        )
    )
