-- Development app `default`: secrets are public knowledge, for local use only.
--   device tokens: HS256 with 'dev-token-secret'     REST API key: 'dev-api-key'
--   callbacks:     http://127.0.0.1:9000/callbacks (run `presence-cli receive`), secret 'dev-callback-secret'
INSERT INTO apps (app_id, token_secret, api_key_sha256, callback_url, callback_secret)
VALUES ('default', 'dev-token-secret', encode(sha256('dev-api-key'::bytea), 'hex'),
        'http://127.0.0.1:9000/callbacks', 'dev-callback-secret')
ON CONFLICT (app_id) DO NOTHING;
