// Runs in each test file's worker: remove the sandboxes its tests made once the file is done.
import { afterAll } from 'vitest'
import { removeSandboxes } from './helpers.ts'

afterAll(() => removeSandboxes())
