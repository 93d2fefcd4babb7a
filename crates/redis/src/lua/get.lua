-- get: ARGV[4] a tid. Answers {'ok', record} or {'ok'} when there is no such task, or
-- {'absent'}.

if not open_shard() then return {'absent'} end
local record = redis.call('HGET', K_REC, ARGV[4])
if record then return {'ok', record} end
return {'ok'}
