import { defineStore } from 'pinia'
import { computed, ref } from 'vue'

const KEY = 'perfpulse.token'

/** The access token, kept for the browser session (sessionStorage), and the login call. */
export const useAuthStore = defineStore('auth', () => {
  const token = ref(sessionStorage.getItem(KEY))
  const username = ref(sessionStorage.getItem(`${KEY}.user`))
  const isAuthenticated = computed(() => Boolean(token.value))
  // Who the server says this is (GET /api/auth/me): role and the hosts it may see.
  const role = ref(null)
  const hosts = ref([])
  const isAdmin = computed(() => role.value === 'admin')

  async function loadMe(fetchImpl = fetch) {
    if (!token.value) return
    try {
      const response = await fetchImpl('/api/auth/me', { headers: { Authorization: `Bearer ${token.value}` } })
      if (!response.ok) return // a refused token is handled where it is used
      const me = await response.json()
      role.value = me.role
      hosts.value = me.hosts
      username.value = me.username
      sessionStorage.setItem(`${KEY}.user`, me.username)
    } catch {
      // offline: the role shows once the server answers
    }
  }

  /** Behind a single sign-on proxy: a token for the user it names, with no password.
   * False when there is none (no proxy, or not a trusted one). */
  async function loginViaProxy(fetchImpl = fetch) {
    try {
      const response = await fetchImpl('/api/auth/proxy', { method: 'POST' })
      if (!response.ok) return false
      const body = await response.json()
      keep(body.access_token, null)
      await loadMe(fetchImpl)
      return true
    } catch {
      return false
    }
  }

  function keep(accessToken, name) {
    token.value = accessToken
    sessionStorage.setItem(KEY, accessToken)
    if (name !== null) {
      username.value = name
      sessionStorage.setItem(`${KEY}.user`, name)
    }
  }

  async function login(name, password, fetchImpl = fetch) {
    const response = await fetchImpl('/api/auth/login', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ username: name, password }),
    })
    if (!response.ok) {
      let message = `Login failed (${response.status})`
      try {
        const body = await response.json()
        if (typeof body.detail === 'string') message = body.detail
        else if (Array.isArray(body.detail)) message = body.detail.map((d) => d.msg).join('; ')
      } catch {
        // keep the status message
      }
      const error = new Error(message)
      // How many more failures before this address must wait, and how long a wait is.
      const left = response.headers.get('X-Login-Attempts-Left')
      error.attemptsLeft = left === null ? null : Number(left)
      const wait = response.status === 429 ? response.headers.get('Retry-After') : null
      error.retryAfter = wait === null ? null : Number(wait)
      throw error
    }
    const body = await response.json()
    keep(body.access_token, name)
    await loadMe(fetchImpl)
  }

  /** Forget the token here (it was refused, or the user signs out). */
  function logout() {
    token.value = null
    username.value = null
    role.value = null
    hosts.value = []
    sessionStorage.removeItem(KEY)
    sessionStorage.removeItem(`${KEY}.user`)
  }

  /** The user's "Log out": the server revokes the token (on every instance), then it is
   * forgotten here. A failed call still logs out locally; the token expires anyway. */
  async function signOut(fetchImpl = fetch) {
    const current = token.value
    logout()
    if (!current) return
    try {
      await fetchImpl('/api/auth/logout', {
        method: 'POST',
        headers: { Authorization: `Bearer ${current}` },
      })
    } catch {
      // offline or server gone: nothing more to do here
    }
  }

  return { token, username, role, hosts, isAdmin, isAuthenticated, login, loginViaProxy, loadMe, logout, signOut }
})
