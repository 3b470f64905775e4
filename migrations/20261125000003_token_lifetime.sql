-- The longest a device login token may live (exp - iat, or exp - now without iat). Tokens minted
-- for longer are refused (bad_token), so a leaked token cannot be used for years.
ALTER TABLE apps
    ADD COLUMN max_token_lifetime_s bigint NOT NULL DEFAULT 604800 CHECK (max_token_lifetime_s > 0);
