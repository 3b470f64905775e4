-- Tencent IM compatibility (docs/http-api.md): an app's callbacks in Tencent IM's
-- State.StateChange format instead of presence's own JSON.
ALTER TABLE apps ADD COLUMN callback_format text NOT NULL DEFAULT 'presence'
    CHECK (callback_format IN ('presence', 'tencent_im'));
