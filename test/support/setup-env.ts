import { inject } from 'vitest';

// Every test file starts from the same known environment; a file that needs another value sets it
// before it imports the module that reads it.
process.env.REDIS_URL = inject('redisUrl');
process.env.AWS_REGION ??= 'us-east-1';
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';
process.env.OPENAI_API_KEY ??= 'sk-test';
// Quiet by default; the observability tests turn logs and metrics back on for themselves.
process.env.POWERTOOLS_LOG_LEVEL = 'SILENT';
process.env.POWERTOOLS_METRICS_DISABLED = 'true';
delete process.env.OPENAI_SECRET_ARN;
delete process.env.REDIS_SECRET_ARN;
