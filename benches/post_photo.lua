-- wrk script for benches/serve.sh: POST one photo's bytes to /v1/identify.
-- The photo is read once, from the path in the PHOTO environment variable.
local f = assert(io.open(os.getenv("PHOTO"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "image/jpeg"
wrk.path = "/v1/identify"
