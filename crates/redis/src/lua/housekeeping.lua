-- housekeeping: ARGV[4] what to do ('p' promote, 'r' reap, 'a' all: reap, promote, forget
-- old idempotency keys and limit keys' full token buckets), ARGV[5] most tasks per step. Answers {'ok', tasks moved, full} where
-- full is 1 when a step hit the bound (call again to go on).

if not open_shard() then return {'absent'} end
init_now()
local what, bound = ARGV[4], tonumber(ARGV[5])
local moved, full = 0, 0
if what == 'r' or what == 'a' then
  local n = reap(bound)
  moved = moved + n
  if n >= bound then full = 1 end
end
if what == 'p' or what == 'a' then
  local n = promote(bound)
  moved = moved + n
  if n >= bound then full = 1 end
end
if what == 'a' then
  if forget_keys(bound) >= bound then full = 1 end
  if forget_full_buckets(bound) >= bound then full = 1 end
end
retain()
flush()
return {'ok', moved, full}
