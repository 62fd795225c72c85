import { createPinia, setActivePinia } from 'pinia'
import { beforeEach, describe, expect, it, vi } from 'vitest'
import { useAuthStore } from '@/stores/auth'

function response(status, body, headers = {}) {
  return {
    ok: status >= 200 && status < 300,
    status,
    json: async () => body,
    headers: { get: (name) => headers[name] ?? null },
  }
}

beforeEach(() => {
  sessionStorage.clear()
  setActivePinia(createPinia())
})

describe('auth store', () => {
  it('logs in, keeps the token for the session, logs out', async () => {
    const auth = useAuthStore()
    const fetchImpl = vi.fn(async () => response(200, { access_token: 'abc', token_type: 'bearer', expires_in: 3600 }))
    await auth.login('alice', 'pw', fetchImpl)
    expect(fetchImpl).toHaveBeenCalledWith('/api/auth/login', expect.objectContaining({ method: 'POST' }))
    expect(JSON.parse(fetchImpl.mock.calls[0][1].body)).toEqual({ username: 'alice', password: 'pw' })
    expect(auth.isAuthenticated).toBe(true)
    expect(sessionStorage.getItem('perfpulse.token')).toBe('abc')
    setActivePinia(createPinia())
    expect(useAuthStore().token).toBe('abc') // survives a reload within the session
    useAuthStore().logout()
    expect(sessionStorage.getItem('perfpulse.token')).toBeNull()
  })

  it('surfaces the server message, the attempts left on 401 and the wait on 429', async () => {
    const auth = useAuthStore()
    const wrong = await auth
      .login('alice', 'bad', async () =>
        response(401, { detail: 'incorrect username or password' }, { 'X-Login-Attempts-Left': '3' }),
      )
      .catch((exc) => exc)
    expect(wrong.message).toBe('incorrect username or password')
    expect(wrong.attemptsLeft).toBe(3)
    expect(wrong.retryAfter).toBeNull()
    const locked = await auth
      .login('alice', 'bad', async () =>
        response(429, { detail: 'too many failed logins; try again later' }, { 'Retry-After': '42' }),
      )
      .catch((exc) => exc)
    expect(locked.message).toBe('too many failed logins; try again later')
    expect(locked.retryAfter).toBe(42)
    expect(auth.isAuthenticated).toBe(false)
  })

  it('signs out: forgets the token at once and asks the server to revoke it', async () => {
    const auth = useAuthStore()
    await auth.login('alice', 'pw', async () => response(200, { access_token: 'abc' }))
    const fetchImpl = vi.fn(async () => response(204, null))
    const done = auth.signOut(fetchImpl)
    expect(auth.isAuthenticated).toBe(false)
    expect(sessionStorage.getItem('perfpulse.token')).toBeNull()
    await done
    expect(fetchImpl).toHaveBeenCalledWith('/api/auth/logout', {
      method: 'POST',
      headers: { Authorization: 'Bearer abc' },
    })
  })

  it('signs out locally even when the server cannot be reached', async () => {
    const auth = useAuthStore()
    await auth.login('alice', 'pw', async () => response(200, { access_token: 'abc' }))
    await auth.signOut(async () => {
      throw new TypeError('Failed to fetch')
    })
    expect(auth.isAuthenticated).toBe(false)
  })
})

describe('who the server says this is', () => {
  it('knows the role and hosts after a login, and forgets them at logout', async () => {
    const auth = useAuthStore()
    const fetchImpl = vi.fn(async (url) =>
      url === '/api/auth/me'
        ? response(200, { username: 'vera', role: 'viewer', hosts: ['web-*'], via: 'token' })
        : response(200, { access_token: 'abc', token_type: 'bearer', expires_in: 3600 }),
    )
    await auth.login('vera', 'pw', fetchImpl)
    expect([auth.role, auth.hosts, auth.isAdmin]).toEqual(['viewer', ['web-*'], false])
    auth.logout()
    expect([auth.role, auth.hosts]).toEqual([null, []])
  })

  it('logs in through a single sign-on proxy when the server names the user', async () => {
    const auth = useAuthStore()
    const named = vi.fn(async (url) =>
      url === '/api/auth/me'
        ? response(200, { username: 'sso-ann', role: 'admin', hosts: ['*'], via: 'token' })
        : response(200, { access_token: 'xyz', token_type: 'bearer', expires_in: 3600 }),
    )
    expect(await auth.loginViaProxy(named)).toBe(true)
    expect([auth.token, auth.username, auth.isAdmin]).toEqual(['xyz', 'sso-ann', true])
    auth.logout()
    expect(await auth.loginViaProxy(async () => response(401, { detail: 'no single sign-on user' }))).toBe(false)
    expect(auth.isAuthenticated).toBe(false)
  })
})
