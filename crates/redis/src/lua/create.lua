-- create: ARGV[4 .. 3 + #CONFIG] the configuration. Creates the shard's metadata if it is missing (a
-- queue's shards are created before its first use); changes nothing otherwise. Answers {'ok'}.

if not open_shard() then
  create_shard(4)
  init_now()
  flush()
end
return {'ok'}
