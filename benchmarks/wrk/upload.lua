-- POST a 10 MB body on every request (scenario 4: the app reads it all and answers with the
-- byte count). wrk sends the same request on every connection; wrk.format adds Content-Length.
-- Each answer is checked, so a server that drops part of the body cannot look fast: the count
-- of wrong answers is printed at the end for the harness to report as errors.
local size = 10 * 1024 * 1024
local expected = tostring(size)
local threads = {}

wrk.method = "POST"
wrk.body = string.rep("u", size)
wrk.headers["Content-Type"] = "application/octet-stream"

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   wrong = 0
end

function response(status, headers, body)
   if status == 200 and body ~= expected then
      wrong = wrong + 1
   end
end

function done(summary, latency, requests)
   local total = 0
   for _, thread in ipairs(threads) do
      total = total + thread:get("wrong")
   end
   io.write(string.format("Wrong upload answers: %d\n", total))
end
